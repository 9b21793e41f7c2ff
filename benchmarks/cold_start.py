"""Cold start of the web UI: from typing `python -m app` to the first translation in hand (target: under 10 s).

    .venv/bin/python benchmarks/cold_start.py                        # the shipped model, 5 repetitions, ~2 minutes
    .venv/bin/python benchmarks/cold_start.py --checkpoint runs/demo --reps 7

What a user meets: every start is a fresh `python -m app` process with its
default flags (the shipped model unless --checkpoint), and the clock runs from
starting it until gradio_client has the answer to a first `/translate` request
as a script sends it: one sentence, source "auto" (the language is detected),
target German. Two kinds of start, interleaved:

- first start: an empty JAX compilation cache (`--compilation-cache` on a new
  folder), as on the day the app is installed, so the first request's programs
  are compiled; Python's bytecode and the OS's file cache are warm all the same,
  so this approximates a first start after installing;
- repeat start: the cache as an earlier session left it (one untimed start,
  kept up until its background warm-up had compiled every shape), as on every
  later day.

The table also gives when the port opened (the page is served from then on).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402
from benchmarks.app_process import AppProcess  # noqa: E402

NAME = "cold_start"
SENTENCE = "The file could not be saved."
TARGET = "de"  # German
TARGET_SECONDS = 10.0
FIRST, REPEAT = "first start (empty compilation cache)", "repeat start (cache filled)"


def start(checkpoint: str | None, cache: str, timeout: float) -> dict:
    """One fresh `python -m app` until its first /translate answer; seconds from the process start."""
    with AppProcess(checkpoint=checkpoint, compilation_cache=cache) as app:
        port_open = app.wait_for_port(timeout)
        answer = app.client(timeout).predict(SENTENCE, "auto", TARGET, api_name="/translate")
        seconds = time.perf_counter() - app.started
        return {"seconds": seconds, "port_open": port_open, "answer": answer, "server_log": app.log_timings()}


def fill_cache(checkpoint: str | None, cache: str, timeout: float) -> float:
    """An untimed session that leaves `cache` as a user's first session does: every warm-up shape compiled."""
    with AppProcess(checkpoint=checkpoint, compilation_cache=cache) as app:
        app.client(timeout).predict(SENTENCE, "auto", TARGET, api_name="/translate")
        return app.wait_for_warm_up(timeout)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model directory (default: the app's, the shipped model)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one start may take before it fails")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    run = protocol.Run(NAME, args, argv=argv)

    caches = tempfile.mkdtemp(prefix="mtmoe-cold-start-")
    try:
        filled = os.path.join(caches, "filled")
        warm_up = fill_cache(args.checkpoint, filled, args.timeout)
        print(f"filled the compilation cache (the server's warm-up took {warm_up:.1f} s)", flush=True)
        runs = {FIRST: [], REPEAT: []}
        for rep, order in enumerate(protocol.orders([FIRST, REPEAT], args.reps)):
            for kind in order:
                if kind == FIRST:
                    cache = os.path.join(caches, f"empty-{rep}")
                    shutil.rmtree(cache, ignore_errors=True)
                else:
                    cache = filled
                runs[kind].append(start(args.checkpoint, cache, args.timeout))
                r = runs[kind][-1]
                print(f"rep {rep + 1} {kind}: {r['seconds']:.2f} s (port open at {r['port_open']:.2f} s) "
                      f"-> {r['answer']!r}", flush=True)
    finally:
        shutil.rmtree(caches, ignore_errors=True)

    summary = {kind: {"seconds": protocol.spread(r["seconds"] for r in rs),
                      "port_open": protocol.spread(r["port_open"] for r in rs)} for kind, rs in runs.items()}
    first, repeat = summary[FIRST]["seconds"], summary[REPEAT]["seconds"]
    met = "met" if max(first["median"], repeat["median"]) < TARGET_SECONDS else "not met"
    model = args.checkpoint or "data/models/mswitch-release"
    run.write(
        title="Cold start of the web UI",
        about=(f"From starting `python -m app` (default flags, model `{model}`) to the answer of a first `/translate` "
               f"request through gradio_client: \"{SENTENCE}\", source \"auto\", target German, beam 4. A fresh "
               "server process per start. First start: an empty JAX compilation cache, as on the day of installing "
               "(Python's bytecode and the OS's file cache are warm, so slightly optimistic). Repeat start: the "
               "cache an earlier session filled. Target: under 10 s."),
        table={"columns": ["start", "port open, s", "first answer, s"],
               "rows": [[kind, protocol.fmt_spread(s["port_open"], "{:.1f}"), protocol.fmt_spread(s["seconds"], "{:.1f}")]
                        for kind, s in summary.items()]},
        headline=(f"A first start answers after {first['median']:.1f} s, a repeat start after "
                  f"{repeat['median']:.1f} s: the target of under {TARGET_SECONDS:.0f} s is {met}."),
        notes=[f"Untimed before the repetitions: one session filled the repeat starts' cache; its background "
               f"warm-up took {warm_up:.1f} s."],
        results={"sentence": SENTENCE, "target": TARGET, "checkpoint": model, "summary": summary, "runs": runs,
                 "fill_cache_warm_up_seconds": warm_up},
    )


if __name__ == "__main__":
    main()
