"""Decode speed of the release model before and after caching the cross-attention keys/values.

    .venv/bin/python benchmarks/decode.py --reps 15       # ~7 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/decode.py --reps 7 --tasks beam4_b32,greedy_b32
    .venv/bin/python benchmarks/decode.py --before 3c58873 --modules layers,network,models,decoding,moe,routing \
        --out benchmarks/results/decode_drop_free.json      # the drop-free capacity ladder (moe.drop_free_capacities)

"before" is mtmoe's layers/network/models/decoding as of commit `--before`
(the last whose decoder projected the encoder output to cross-attention
keys/values inside every step; XLA hoists that loop-invariant projection out
of the decode loop, so it ran once per call, but over all B*K beam-tiled rows),
read with `git show` and imported as the package `mtmoe_before`; "after" is the working tree (keys/values projected
once per sentence by `Transformer.init_cache`, shared by the beams). Both use
today's moe.py / routing.py and the same parameters, so only the decoder's
cached path differs. Each task is compiled for both variants first; their
outputs must be identical token for token, else the script stops.

Shapes: the shipped model (data/models/mswitch-release: d_model 256, 3+3
layers, 8 experts, 16k vocabulary) on 32 short embedded test sentences (8 each
of en->de, en->fr, en->ja, de->en, at most 30 tokens with tag and EOS, so one
32-token source bucket), decoding up to 64 tokens (what `Translator` asks for
these sources) with early stopping. batch 32 is Translator's largest batch
(`MAX_BATCH_BUCKET`); batch 1 is the web UI's one-sentence request (the first 4
sentences, one call each); beam 16 over 8 sentences decodes the same 128
rows per step as beam 4 over 32, with 16 beams sharing each sentence's
keys/values. Repetitions interleave the variants (their order
alternates) so load from other processes hits both alike; the table gives
medians (min..max), the ratio of the medians, the median (min..max) of the
per-repetition ratios (before and after timed back to back) and the ratio of
the fastest runs (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mtmoe.data import layouts, readers  # noqa: E402
from mtmoe.translate import Translator  # noqa: E402

RELEASE_DIR = os.path.join(REPO, "data", "models", "mswitch-release")
BEFORE_COMMIT = "9104789"  # the default --before: the last commit without the cross-attention cache
OLD_MODULES = ("layers", "network", "models", "decoding")
DIRECTIONS = [("en", "de"), ("en", "fr"), ("en", "ja"), ("de", "en")]
PER_DIRECTION = 8
MAX_SOURCE_TOKENS = 30  # tag + pieces + EOS, so every source pads to the 32-token bucket
SOURCE_LENGTH = 32
DECODE_LENGTH = 64
TASKS = {  # name: (decoding, beam size, sentences per call, calls)
    "beam4_b32": ("beam", 4, 32, 1),
    "greedy_b32": ("greedy", 1, 32, 1),
    "beam4_b1": ("beam", 4, 1, 4),
    "beam16_b8": ("beam", 16, 8, 1),
}


def _rewrite_imports(source: str, modules=OLD_MODULES) -> str:
    """Points imports of the old `modules` at mtmoe_before; everything else stays on mtmoe."""

    def split_names(match):
        names = [name.strip() for name in match.group(1).split(",")]
        old = [name for name in names if name.split(" as ")[0] in modules]
        new = [name for name in names if name not in old]
        lines = [f"from mtmoe_before import {', '.join(old)}"] if old else []
        lines += [f"from mtmoe import {', '.join(new)}"] if new else []
        return "\n".join(lines)

    source = re.sub(r"^from mtmoe import (.+)$", split_names, source, flags=re.M)
    return re.sub(rf"^from mtmoe\.({'|'.join(modules)}) import", r"from mtmoe_before.\1 import", source, flags=re.M)


def import_before(commit: str, modules=OLD_MODULES):
    """The `models` module of mtmoe as of `commit`, with `modules` from that commit too
    (package mtmoe_before, in a temporary directory)."""
    root = tempfile.mkdtemp(prefix="mtmoe_before_")
    package = os.path.join(root, "mtmoe_before")
    os.mkdir(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    for name in modules:
        shown = subprocess.run(["git", "show", f"{commit}:mtmoe/{name}.py"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode != 0:
            raise SystemExit(f"git show {commit}:mtmoe/{name}.py failed ({shown.stderr.strip()}); pass --before COMMIT")
        with open(os.path.join(package, f"{name}.py"), "w") as f:
            f.write(_rewrite_imports(shown.stdout, modules))
    sys.path.insert(0, root)
    return importlib.import_module("mtmoe_before.models")


def load_sources(translator: Translator) -> list[list[int]]:
    """32 encoded sources: the first PER_DIRECTION short test sentences of each direction."""
    sources = []
    for source_lang, target_lang in DIRECTIONS:
        other = target_lang if source_lang == "en" else source_lang
        english, foreign = zip(*readers.read_tsv(layouts.embedded_file(layouts.DEFAULT_EMBEDDED_DIR, "test", other)))
        texts = english if source_lang == "en" else foreign
        encoded = [translator.encode_source(text, target_lang) for text in texts]
        picked = [ids for ids in encoded if len(ids) <= MAX_SOURCE_TOKENS][:PER_DIRECTION]
        if len(picked) < PER_DIRECTION:
            raise SystemExit(f"only {len(picked)} {source_lang}->{target_lang} test sentences fit {MAX_SOURCE_TOKENS} tokens")
        sources += picked
    return sources


def batches(sources: list[list[int]], *, per_call: int, calls: int) -> list[dict]:
    out = []
    for call in range(calls):
        chunk = sources[call * per_call : (call + 1) * per_call]
        tokens = np.zeros((per_call, SOURCE_LENGTH), np.int32)  # [B, S]
        for row, ids in enumerate(chunk):
            tokens[row, : len(ids)] = ids
        out.append({"encoder_input_tokens": jnp.asarray(tokens)})
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {list(TASKS)}")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="commit whose decoder recomputes cross-attention K/V")
    parser.add_argument("--modules", default=",".join(OLD_MODULES),
                        help="mtmoe modules taken from --before (add moe,routing to time changes to the MoE layer)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "decode.json"))
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    for task in tasks:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    load_start = uptime()
    print(load_start, flush=True)

    translator = Translator.from_checkpoint(RELEASE_DIR)
    after_model = translator.model
    before_models = import_before(args.before, tuple(args.modules.split(",")))
    before_network = sys.modules["mtmoe_before.network"]
    before_model = before_models.EncoderDecoderModel(
        config=before_network.TransformerConfig(**dataclasses.asdict(after_model.config)),
        inference_dtype=after_model.inference_module.config.dtype,
    )
    models = {"before": before_model, "after": after_model}
    params = translator.params
    sources = load_sources(translator)

    fns, inputs, compile_s = {}, {}, {}
    for task in tasks:
        decoding, beam_size, per_call, calls = TASKS[task]
        inputs[task] = batches(sources, per_call=per_call, calls=calls)
        outputs = {}
        for variant, model in models.items():
            fn = jax.jit(functools.partial(
                model.predict_batch, decoding=decoding, beam_size=beam_size, max_decode_length=DECODE_LENGTH))
            start = time.perf_counter()
            outputs[variant] = [np.asarray(fn(params, batch)) for batch in inputs[task]]
            compile_s[(task, variant)] = time.perf_counter() - start
            fns[(task, variant)] = fn
        for before, after in zip(outputs["before"], outputs["after"]):
            if not np.array_equal(before, after):
                rows = np.flatnonzero(np.any(before != after, axis=1)).tolist()
                raise SystemExit(f"{task}: outputs differ between before and after in rows {rows}")
        print(f"{task}: compiled both (before {compile_s[(task, 'before')]:.1f} s, after "
              f"{compile_s[(task, 'after')]:.1f} s); outputs identical", flush=True)

    times = {key: [] for key in fns}
    for rep in range(args.reps):
        order = list(models) if rep % 2 == 0 else list(models)[::-1]
        for task in tasks:
            for variant in order:
                fn = fns[(task, variant)]
                start = time.perf_counter()
                for batch in inputs[task]:
                    jax.block_until_ready(fn(params, batch))
                times[(task, variant)].append(time.perf_counter() - start)
        print(f"rep {rep + 1}/{args.reps} done", flush=True)
    load_end = uptime()

    rows = []
    for task in tasks:
        before = statistics.median(times[(task, "before")])
        after = statistics.median(times[(task, "after")])
        sentences = TASKS[task][2] * TASKS[task][3]
        paired = [b / a for b, a in zip(times[(task, "before")], times[(task, "after")])]
        rows.append({
            "task": task,
            "before_s": before, "before_range": [min(times[(task, "before")]), max(times[(task, "before")])],
            "after_s": after, "after_range": [min(times[(task, "after")]), max(times[(task, "after")])],
            "speedup": before / after,
            "speedup_paired": statistics.median(paired),
            "speedup_paired_range": [min(paired), max(paired)],
            "speedup_min": min(times[(task, "before")]) / min(times[(task, "after")]),
            "after_sentences_per_s": sentences / after,
        })
    print(f"\nrelease model, {len(sources)} sentences, decode length {DECODE_LENGTH}, {args.reps} reps; "
          f"load at start: {load_start.split('load average:')[-1].strip()}, at end: "
          f"{load_end.split('load average:')[-1].strip()}")
    print("| task | before (s) | after (s) | before / after: medians | paired (range) | fastest runs | "
          "after sentences/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['task']} | {row['before_s']:.3f} ({row['before_range'][0]:.3f}..{row['before_range'][1]:.3f}) "
              f"| {row['after_s']:.3f} ({row['after_range'][0]:.3f}..{row['after_range'][1]:.3f}) "
              f"| {row['speedup']:.2f}x | {row['speedup_paired']:.2f}x ({row['speedup_paired_range'][0]:.2f}.."
              f"{row['speedup_paired_range'][1]:.2f}) | {row['speedup_min']:.2f}x | {row['after_sentences_per_s']:.1f} |")
    result = {
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + (argv if argv is not None else sys.argv[1:])),
        "before_commit": args.before,
        "before_modules": args.modules,
        "uptime_start": load_start,
        "uptime_end": load_end,
        "devices": str(jax.devices()),
        "rows": rows,
        "times": {f"{task}/{variant}": values for (task, variant), values in times.items()},
        "compile_s": {f"{task}/{variant}": value for (task, variant), value in compile_s.items()},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.relpath(args.out, REPO)}")


if __name__ == "__main__":
    main()
