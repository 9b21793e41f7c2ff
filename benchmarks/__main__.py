"""`python -m benchmarks`: the headline benchmarks one after the other, then BENCHMARKS.md from their results.

    python -m benchmarks                              # every script of HEADLINE, with its default arguments
    python -m benchmarks --only cold_start,decode     # some of them
    python -m benchmarks --allow-load                 # passed on to each: measure on a busy machine (marked so)

Each script runs in its own process with its default arguments, which are
its headline configuration, and writes benchmarks/results/<name>.json; the
first that fails stops the sequence with its message, and only when all
succeeded is BENCHMARKS.md rendered (`python -m benchmarks.render`).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys

from benchmarks.protocol import ROOT

# The headline set, in the order BENCHMARKS.md shows them (benchmarks/render.py reads it from here).
HEADLINE = ("mfu", "experts_scaling", "cpu_devices", "decode", "hf_switch", "harness", "web_ui_latency", "cold_start",
            "input_pipeline")
# Headline figures no script measures under the protocol yet, {what: why}: BENCHMARKS.md lists them as such
# (a HEADLINE script without a result file is listed there too, with its command).
NOT_YET_MEASURED: dict[str, str] = {}


def script(name: str) -> str:
    return os.path.join("benchmarks", f"{name}.py")


def run_one(name: str, extra: list[str]) -> str | None:
    """Runs benchmarks/<name>.py, its output passed through; None, or why it failed (its last line on stderr)."""
    command = [sys.executable, script(name), *extra]
    print(f"== {' '.join(['python', script(name), *extra])}", flush=True)
    tail = collections.deque(maxlen=1)
    with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, bufsize=1) as process:
        for line in process.stderr:
            sys.stderr.write(line)
            if line.strip():
                tail.append(line.rstrip())
    if process.returncode == 0:
        return None
    return f"{script(name)} failed (exit status {process.returncode}): {tail[-1] if tail else '(no message)'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(HEADLINE),
                        help=f"comma-separated names out of {','.join(HEADLINE)} (default: all, in that order)")
    parser.add_argument("--allow-load", "--allow_load", dest="allow_load", action="store_true",
                        help="passed on to every script: measure even on a busy machine (results marked so)")
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name]
    unknown = [name for name in names if name not in HEADLINE]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose among {','.join(HEADLINE)}")
    missing = [script(name) for name in names if not os.path.exists(os.path.join(ROOT, script(name)))]
    if missing:
        raise SystemExit(f"benchmarks: {', '.join(missing)} missing; nothing was run")
    extra = ["--allow-load"] if args.allow_load else []
    for i, name in enumerate(names):
        failure = run_one(name, extra)
        if failure:
            rest = f"; not run: {', '.join(names[i + 1:])}" if names[i + 1:] else ""
            raise SystemExit(f"benchmarks: {failure}{rest}; BENCHMARKS.md was not rendered")
    from benchmarks import render

    return render.main([])


if __name__ == "__main__":
    sys.exit(main())
