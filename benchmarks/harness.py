"""Speed of the evaluation harness as a user meets it: `eval/per_language_bleu.py` on the shipped model.

    .venv/bin/python benchmarks/harness.py                 # en-de,en-fr,en-ja,de-en x 100 sentences, beam 4
    .venv/bin/python benchmarks/harness.py --pairs en-de --max_sentences 50 --reps 5

Every repetition runs the harness twice, each a fresh process with its default
flags (beam 4; the Translator sizes decode calls by sentence length), in an order that changes per repetition:

- first run: an empty JAX compilation cache (`--compilation_cache` on a new
  folder), as the first time a user scores a model of this size: every beam
  search shape is compiled in the run;
- later run: the cache the latest first run filled, as every run after that
  (the first repetition runs its first run first, so that there is one).

Sentences per second are the harness's own figure: the sentences it translated
over the seconds it reports for decoding and scoring (results.json "seconds",
which leaves out the interpreter's start and the imports). Every run's
hypotheses must be the same (their digests are compared and recorded), so a
change of speed can be told apart from a change of output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "harness"
FIRST, LATER = "first run (empty compilation cache)", "later run (cache filled)"


def hypotheses_digest(out_dir: str) -> dict[str, str]:
    """sha256 of each pair's hypotheses file (hyps/<pair>.txt)."""
    hyps = os.path.join(out_dir, "hyps")
    return {name[:-4]: hashlib.sha256(open(os.path.join(hyps, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(hyps)) if name.endswith(".txt")}


def harness_run(args, cache: str, out_dir: str) -> dict:
    """One `eval/per_language_bleu.py` process; its reported seconds, wall time, sentences and hypotheses."""
    command = [sys.executable, "eval/per_language_bleu.py", "--pairs", args.pairs, "--max_sentences",
               str(args.max_sentences), "--output", out_dir, "--overwrite", "--compilation_cache", cache]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SystemExit(f"{NAME}: the harness failed (exit status {completed.returncode}): {last}")
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    sentences = sum(int(entry["n"]) for entry in results["pairs"].values())
    return {"seconds": results["seconds"], "wall_seconds": wall, "sentences": sentences,
            "sentences_per_second": sentences / results["seconds"], "digests": hypotheses_digest(out_dir),
            "scores": {pair: {"bleu": e["bleu"], "chrf": e["chrf"]} for pair, e in results["pairs"].items()}}


def compiled_searches(cache: str) -> int:
    """Beam-search executables in a JAX compilation cache: one per decode-call shape the run compiled.
    JAX keeps an entry as <function>-<hash>-cache (the executable) beside <function>-<hash>-atime."""
    return sum(name.startswith("jit_predict_batch-") and name.endswith("-cache") for name in os.listdir(cache))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model directory (default: the harness's, the shipped model)")
    parser.add_argument("--pairs", default="en-de,en-fr,en-ja,de-en")
    parser.add_argument("--max_sentences", type=int, default=100)
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    run = protocol.Run(NAME, args, argv=argv)

    work = tempfile.mkdtemp(prefix="mtmoe-harness-bench-")
    runs = {FIRST: [], LATER: []}
    orders = protocol.orders(runs, args.reps)
    orders[0] = [FIRST, LATER]  # a later run needs a cache that a first run filled
    try:
        filled = None
        for rep, order in enumerate(orders):
            for kind in order:
                cache = os.path.join(work, f"empty-{rep}") if kind == FIRST else filled
                result = harness_run(args, cache, os.path.join(work, "out"))
                if kind == FIRST:
                    filled = cache  # a first run leaves the cache every later run finds
                    result["compiled_searches"] = compiled_searches(cache)
                runs[kind].append(result)
                print(f"rep {rep + 1} {kind}: {result['sentences']} sentences in {result['seconds']:.1f} s "
                      f"({result['sentences_per_second']:.2f} sentences/s; process {result['wall_seconds']:.1f} s)",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    digests = {json.dumps(r["digests"], sort_keys=True) for rs in runs.values() for r in rs}
    if len(digests) != 1:
        raise SystemExit(f"{NAME}: the runs' hypotheses differ ({len(digests)} versions); decoding is not "
                         "deterministic here, so its speed cannot be compared")
    summary = {kind: {"sentences_per_second": protocol.spread(r["sentences_per_second"] for r in rs),
                      "seconds": protocol.spread(r["seconds"] for r in rs),
                      "wall_seconds": protocol.spread(r["wall_seconds"] for r in rs)} for kind, rs in runs.items()}
    first, later = summary[FIRST]["sentences_per_second"], summary[LATER]["sentences_per_second"]
    sentences = runs[LATER][0]["sentences"]
    model = args.checkpoint or "data/models/mswitch-release"
    shapes = {r["compiled_searches"] for r in runs[FIRST]}
    # What a first run pays: its extra seconds over the later run of its repetition, per compiled shape.
    per_shape = protocol.spread(
        (first_run["seconds"] - later_run["seconds"]) / max(first_run["compiled_searches"], 1)
        for first_run, later_run in zip(runs[FIRST], runs[LATER]))
    notes = [f"A first run compiles {', '.join(map(str, sorted(shapes)))} beam-search programs (one per decode-call "
             "shape: rows x source length bucket); its extra time over a later run is "
             f"{protocol.fmt_spread(per_shape, '{:.1f}')} s per program."]
    run.write(
        title="Evaluation harness speed",
        about=(f"`python eval/per_language_bleu.py --pairs {args.pairs} --max_sentences {args.max_sentences}` on "
               f"`{model}` (beam 4, decode calls of up to 32 sentences and 1024 source tokens, CPU): {sentences} sentences decoded and scored per run, a fresh "
               "process per run. First run: an empty JAX compilation cache, so every beam-search shape compiles "
               "in the run. Later run: the cache a previous run filled. Sentences/s over the seconds the harness "
               "reports (decoding and scoring; the process time adds the interpreter's start and imports). Every "
               "run gave the same hypotheses."),
        table={"columns": ["run", "sentences/s", "harness seconds", "process seconds"],
               "rows": [[kind, protocol.fmt_spread(s["sentences_per_second"], "{:.2f}"),
                         protocol.fmt_spread(s["seconds"], "{:.1f}"), protocol.fmt_spread(s["wall_seconds"], "{:.1f}")]
                        for kind, s in summary.items()]},
        headline=(f"{first['median']:.2f} sentences/s on a first run and {later['median']:.2f} on later runs "
                  f"({sentences} sentences, beam 4)."),
        notes=notes,
        results={"pairs": args.pairs, "max_sentences": args.max_sentences, "checkpoint": model,
                 "compiled_searches": sorted(shapes), "first_run_seconds_per_compiled_search": per_shape,
                 "hypotheses_sha256": runs[LATER][0]["digests"], "scores": runs[LATER][0]["scores"],
                 "summary": summary, "runs": runs},
    )


if __name__ == "__main__":
    main()
