"""Cold start of the shipped model: from a fresh process to the first translation (target: under 10 s).

    .venv/bin/python benchmarks/cold_start.py --reps 3                       # library and app, first-ever and repeat
    .venv/bin/python benchmarks/cold_start.py --reps 3 --baseline_ref REF       # plus the app as it is at commit REF
    .venv/bin/python benchmarks/cold_start.py --checkpoint runs/demo --ways library,app-first
    .venv/bin/python benchmarks/cold_start.py --phases --reps 2   # where the time goes, part by part

Each way in is timed in a fresh Python process, from process start to the
first German translation of one sentence in hand:

- `library`: `from mtmoe.translate import Translator`, `Translator.from_checkpoint`,
  `translate([...], "de")` with beam 4 (what a script or the BLEU harness pays);
  no compilation cache;
- `app, first-ever start`: `python -m app` as a user starts it, with an empty
  compilation cache folder (as on a new machine), polled with gradio_client
  until its `/translate` endpoint answers the first request;
- `app, repeat start`: the same command again on the cache the first-ever
  start of the same repetition filled (every start after the first);
- `app @REF` (with --baseline_ref): `python -m app` from a git worktree of
  commit REF, for a before/after comparison in the same run; on an empty
  compilation cache when that commit's app has `--compilation-cache` (the row
  says "its default cache" otherwise).

The app runs with its default flags (--warm-batch 4); --app_args adds more.
Repetitions alternate the ways, so load from other processes on the shared
cores hits all alike. Prints one line per run (with the server's own timings
from its log: model loaded, page served, warm-up done) and a markdown table
with the 1-minute load average before each repetition.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
SENTENCE = "The file could not be saved."
LIBRARY = """
import time, sys
from mtmoe.translate import Translator
t = Translator.from_checkpoint(sys.argv[1])
loaded = time.time()
out = t.translate([{sentence!r}], "de", beam_size=4)
print(f"LOADED {{loaded}} DONE {{time.time()}} {{out[0]!r}}", flush=True)
"""
# --phases: the start-up's parts one after the other in one fresh process (no overlap), with
# the seconds of each; "compile" is split into tracing/lowering (Python, holds the GIL) and
# XLA's compilation (releases it), and repeated on a second shape.
PHASES = """
import os, sys, time
t0 = time.perf_counter()
def mark(what):
    global t0
    now = time.perf_counter()
    print(f"PHASE {{now - t0:.2f}} {{what}}", flush=True)
    t0 = now
import jax
if sys.argv[2] != "-":
    from app.server import configure_compilation_cache
    configure_compilation_cache(sys.argv[2])
mark("import jax (+ cache settings)")
import mtmoe.translate
mark("import mtmoe.translate")
translator = mtmoe.translate.Translator.from_checkpoint(sys.argv[1])
mark("Translator.from_checkpoint (flax/orbax imports, restore)")
import gradio
mark("import gradio")
import app.page
mark("import app.page (the rest)")
from app.service import TranslationService
service = TranslationService(translator, name="m")
service.detector
mark("langid detector (unpack its model)")
import jax.numpy as jnp
for length in (16, 8):
    tokens = jnp.zeros((1, length), jnp.int32).at[0, :3].set(5)
    lowered = translator._predict.lower(translator.params, {{"encoder_input_tokens": tokens}}, decoding="beam",
                                        beam_size=4, alpha=0.6, max_decode_length=64)
    mark(f"beam search [1, {{length}}]: trace + lower (GIL)")
    lowered.compile()
    mark(f"beam search [1, {{length}}]: XLA compile (or cache load)")
translator.translate([{sentence!r}], "de")
mark("first translation, beam 4 (compiled)")
translator.route({sentence!r}, "de")
mark("routing trace (compile + run)")
from app.server import launch
demo = app.page.build_app({{"m": service}})
mark("build_app (Blocks)")
_, url, _ = launch(demo, port=int(sys.argv[3]), prevent_thread_lock=True)
mark("launch (queue, FastAPI app, uvicorn)")
from gradio_client import Client
client = Client(url, verbose=False)
mark("gradio_client handshake")
client.predict({sentence!r}, "en", "de", api_name="/translate")
mark("first /translate request")
demo.close()
"""
# What the server's log says about its start-up (app/server.py), seconds after its own start.
LOG_TIMINGS = {"loaded": re.compile(r"loaded .* in ([0-9.]+) s"),
               "served": re.compile(r"serving .*, ([0-9.]+) s after"),
               "warmed": re.compile(r"warmed .* in ([0-9.]+) s")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_library(checkpoint: str) -> tuple[float, str]:
    started = time.time()
    out = subprocess.run([sys.executable, "-c", LIBRARY.format(sentence=SENTENCE), checkpoint], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("LOADED"))
    done = float(line.split()[3])
    return done - started, line.split(" ", 4)[4]


def time_app(checkpoint: str, *, root: str = ROOT, args: list[str] = (), timeout: float = 300.0,
             linger: float = 0.0) -> tuple[float, str]:
    """Seconds from `python -m app` starting to the first /translate answer, and a summary.

    linger: keep the server up this long after the answer, so a background
    warm-up can finish and log its time (not counted).
    """
    from gradio_client import Client

    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        started = time.time()
        server = subprocess.Popen([sys.executable, "-m", "app", "--checkpoint", checkpoint, "--port", str(port), *args],
                                  cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            while time.time() - started < timeout:
                if server.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"python -m app exited with status {server.returncode}: {log.read()[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                except OSError:
                    time.sleep(0.05)
                    continue
                connected = time.time() - started
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                asked = time.time() - started
                result = client.predict(SENTENCE, "en", "de", api_name="/translate")
                took = time.time() - started
                deadline = time.time() + linger
                while time.time() < deadline and not _log_timings(log).get("warmed"):
                    time.sleep(0.5)
                timings = _log_timings(log)
                summary = " ".join(f"{name} {value:.1f}" for name, value in timings.items())
                return took, (f"{result!r} (port open {connected:.1f}, client ready {asked:.1f}; "
                              f"server log, s after its start: {summary or '-'})")
            raise TimeoutError(f"the app did not answer within {timeout:.0f} s")
        finally:
            server.terminate()
            server.wait(timeout=30)


def _log_timings(log) -> dict[str, float]:
    log.flush()
    log.seek(0)
    text = log.read()
    log.seek(0, os.SEEK_END)
    found = {}
    for name, pattern in LOG_TIMINGS.items():
        match = pattern.search(text)
        if match:
            found[name] = float(match.group(1))
    return found


def profile_phases(checkpoint: str, *, cache: str | None) -> list[tuple[str, float]]:
    """(phase, seconds) of PHASES in a fresh process; cache: a compilation cache folder or None."""
    out = subprocess.run([sys.executable, "-c", PHASES.format(sentence=SENTENCE), checkpoint, cache or "-",
                          str(free_port())], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [(line.split(" ", 2)[2], float(line.split()[1])) for line in out.splitlines() if line.startswith("PHASE ")]


def baseline_worktree(ref: str) -> str:
    """A detached git worktree of `ref` in a temp folder (removed at exit by the caller)."""
    path = tempfile.mkdtemp(prefix="mtmoe-cold-start-")
    subprocess.run(["git", "worktree", "add", "--detach", path, ref], cwd=ROOT, check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.path.join("data", "models", "mswitch-release"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ways", default="library,app-first,app-repeat",
                        help="comma-separated: library, app-first, app-repeat (default: all three)")
    parser.add_argument("--baseline_ref", default=None, help="also time `python -m app` as it was at this git commit")
    parser.add_argument("--app_args", default="", help="extra flags for every `python -m app`, e.g. '--warm-batch 1'")
    parser.add_argument("--linger", type=float, default=0.0,
                        help="seconds to keep each server up after its answer, to log its warm-up time")
    parser.add_argument("--phases", action="store_true",
                        help="instead: time the start-up's parts one by one, without and with a filled cache")
    args = parser.parse_args()
    checkpoint = os.path.abspath(os.path.join(ROOT, args.checkpoint))  # the baseline runs from another folder
    if args.phases:
        print_phases(checkpoint, reps=args.reps)
        return
    app_args = args.app_args.split()
    cache_root = tempfile.mkdtemp(prefix="mtmoe-cold-start-cache-")
    worktree = baseline_worktree(args.baseline_ref) if args.baseline_ref else None
    wanted = [way for way in args.ways.split(",") if way]
    ways = []
    if worktree:
        # An app that knows --compilation-cache starts on an empty one, like "first-ever start" below;
        # otherwise it would load what earlier runs left in its default cache folder.
        with open(os.path.join(worktree, "app", "server.py")) as f:
            baseline_has_cache_flag = "--compilation-cache" in f.read()

        def baseline(rep: int):
            extra = []
            if baseline_has_cache_flag:
                cache = os.path.join(cache_root, f"baseline-rep{rep}")
                shutil.rmtree(cache, ignore_errors=True)
                extra = ["--compilation-cache", cache]
            return time_app(checkpoint, root=worktree, args=[*app_args, *extra], linger=args.linger)

        ways.append((f"app @{args.baseline_ref}" + ("" if baseline_has_cache_flag else " (its default cache)"), baseline))
    if "library" in wanted:
        ways.append(("library", lambda rep: time_library(checkpoint)))
    if "app-first" in wanted:
        def first(rep: int):
            cache = os.path.join(cache_root, f"rep{rep}")
            shutil.rmtree(cache, ignore_errors=True)
            return time_app(checkpoint, args=[*app_args, "--compilation-cache", cache], linger=args.linger)

        ways.append(("app, first-ever start (empty cache)", first))
    if "app-repeat" in wanted:
        def repeat(rep: int):
            cache = os.path.join(cache_root, f"rep{rep}")
            if not os.path.isdir(cache):  # app-first not run: fill the cache once, untimed
                time_app(checkpoint, args=[*app_args, "--compilation-cache", cache], linger=300.0)
            return time_app(checkpoint, args=[*app_args, "--compilation-cache", cache], linger=args.linger)

        ways.append(("app, repeat start (cache filled)", repeat))
    seconds = {name: [] for name, _ in ways}
    loads = []
    try:
        for rep in range(args.reps):
            loads.append(os.getloadavg()[0])
            for name, run in ways:
                took, output = run(rep)
                seconds[name].append(took)
                print(f"rep {rep + 1} load {os.getloadavg()[0]:.1f}: {name}: {took:.1f} s -> {output}", flush=True)
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
        if worktree:
            subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT, check=False)
    print(f"\n{args.checkpoint}, {args.reps} repetitions, app flags: {args.app_args or '(defaults)'}, "
          f"1-minute load average {min(loads):.1f}-{max(loads):.1f} (nproc {os.cpu_count()})\n")
    print("| way in | median s | min .. max s |\n|---|---:|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} .. {max(values):.1f} |")


def print_phases(checkpoint: str, *, reps: int) -> None:
    """Markdown table: median seconds of each start-up part, first-ever (empty cache) and repeat."""
    runs = {"first-ever": [], "repeat": []}
    loads = []
    with tempfile.TemporaryDirectory(prefix="mtmoe-cold-start-cache-") as cache_root:
        for rep in range(reps):
            loads.append(os.getloadavg()[0])
            cache = os.path.join(cache_root, f"rep{rep}")
            runs["first-ever"].append(profile_phases(checkpoint, cache=cache))
            runs["repeat"].append(profile_phases(checkpoint, cache=cache))
            print(f"rep {rep + 1} load {loads[-1]:.1f}: first-ever {sum(s for _, s in runs['first-ever'][-1]):.1f} s, "
                  f"repeat {sum(s for _, s in runs['repeat'][-1]):.1f} s", flush=True)
    print(f"\n{reps} repetitions, 1-minute load average {min(loads):.1f}-{max(loads):.1f} (nproc {os.cpu_count()})\n")
    print("| part (one after the other) | first-ever s | repeat s |\n|---|---:|---:|")
    names = [name for name, _ in runs["first-ever"][0]]
    for i, name in enumerate(names):
        first = statistics.median(run[i][1] for run in runs["first-ever"])
        repeat = statistics.median(run[i][1] for run in runs["repeat"])
        print(f"| {name} | {first:.2f} | {repeat:.2f} |")
    totals = [statistics.median(sum(s for _, s in run) for run in runs[way]) for way in runs]
    print(f"| **sum** | {totals[0]:.1f} | {totals[1]:.1f} |")


if __name__ == "__main__":
    main()
