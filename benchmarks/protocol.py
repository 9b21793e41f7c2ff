"""The measurement protocol every benchmark here follows, in code.

A figure is only worth publishing if a reader can tell what was measured, on
what, and whether anything else ran beside it. So every benchmark script:

1. builds its parser with `add_arguments` (``--reps``, at least 5 for a result;
   ``--allow-load``; ``--out``). A benchmark whose figures are deterministic
   (scores of a deterministic decoder, counts) and which times nothing says
   ``timed=False``: one pass, no idle check, since load cannot change what it
   reports; the load is still recorded,
2. opens a `Run` before it measures anything: the run checks that the machine
   is idle (other processes' CPU use, sampled from /proc/stat, and the load
   average) and refuses to start otherwise unless ``--allow-load`` was given,
3. interleaves its variants with `orders` (a different order every repetition,
   so a slow period of the host hits every variant alike),
4. summarises each quantity with `spread` (median, min..max, every value),
5. ends with `Run.write`, which adds the machine, the versions, the commit and
   the load during the run, and writes the JSON atomically. The JSON carries a
   ``table`` (columns and rows, as the script wants it read) that
   `benchmarks/render.py` turns into BENCHMARKS.md, so the document can only
   say what a result file says.

"Idle" is measured, not assumed. The 1-minute load average lags by a minute
(a benchmark that just finished still shows ~2 on this 2-core machine), so the
check samples /proc/stat for a few seconds: the busy share of all cores while
this process sleeps is other processes' work. During the run the same counters
give the CPU seconds other processes used: total busy time minus this process
tree's own CPU time (self and waited-for children, from getrusage).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
MIN_REPS = 5
# Other processes may use at most this share of all cores while the machine
# counts as idle (0.15 of 2 cores is 0.3 of one core: an editor, a shell, sshd).
IDLE_BUSY_SHARE = 0.15
IDLE_SAMPLE_SECONDS = 3.0
IDLE_WAIT_SECONDS = 90.0
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "seqio", "tensorflow",
                      "sentencepiece", "sacrebleu", "gradio", "gradio_client", "torch", "transformers")
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def add_arguments(parser: argparse.ArgumentParser, *, name: str, reps: int = MIN_REPS, timed: bool = True) -> None:
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, f"{name}.json"),
                        help="where the JSON result goes (default: %(default)s)")
    if not timed:
        parser.set_defaults(reps=1, allow_load=False, timed=False)
        return
    parser.add_argument("--reps", type=int, default=reps,
                        help=f"repetitions, each timing every variant once (at least {MIN_REPS} for a result)")
    parser.add_argument("--allow-load", "--allow_load", dest="allow_load", action="store_true",
                        help="measure even when other processes keep the machine busy (the result says so)")


# ---------------------------------------------------------------------------
# Statistics and ordering


def spread(values) -> dict:
    """Median and min..max of one quantity over the repetitions, with every value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("spread() of no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def ratio_spread(numerators, denominators) -> dict:
    """Per-repetition ratios (each pair measured in the same repetition), summarised."""
    if len(numerators) != len(denominators):
        raise ValueError(f"ratio_spread of {len(numerators)} and {len(denominators)} values")
    return spread(n / d for n, d in zip(numerators, denominators, strict=True))


def orders(variants, reps: int, *, seed: int = 0) -> list[list]:
    """One order of `variants` per repetition: rotations first, then seeded shuffles.

    Rotations put every variant first (right after the previous repetition's
    last) equally often; later repetitions are shuffled so that no fixed
    neighbour follows each variant.
    """
    variants = list(variants)
    rng = random.Random(seed)
    out = []
    for rep in range(reps):
        if rep < len(variants):
            k = rep % len(variants)
            out.append(variants[k:] + variants[:k])
        else:
            order = variants[:]
            rng.shuffle(order)
            out.append(order)
    return out


def fmt_spread(s: dict, fmt: str = "{:.3g}", scale: float = 1.0) -> str:
    """'median (min..max)' for a table cell."""
    return f"{fmt.format(s['median'] * scale)} ({fmt.format(s['min'] * scale)}..{fmt.format(s['max'] * scale)})"


# ---------------------------------------------------------------------------
# The machine


def _cpu_times() -> tuple[float, float]:
    """(busy, total) seconds summed over all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / hz, total / hz


def _own_cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def other_busy_share(seconds: float | None = None) -> float:
    """Share of all cores that other processes kept busy over `seconds` (default IDLE_SAMPLE_SECONDS) while this one slept."""
    seconds = IDLE_SAMPLE_SECONDS if seconds is None else seconds
    busy0, total0 = _cpu_times()
    own0 = _own_cpu_seconds()
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    own = _own_cpu_seconds() - own0
    return max(0.0, (busy1 - busy0 - own) / max(total1 - total0, 1e-9))


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "simd": [f for f in SIMD_FLAGS if f in flags], "cores": os.cpu_count(),
            "memory_gib": round(memory_gb, 1), "platform": platform.platform(), "python": platform.python_version()}


def versions(extra=()) -> dict:
    out = {}
    for name in (*VERSIONED_PACKAGES, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> dict:
    """The commit measured, and the files that differed from it."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    dirty = [path for path in dirty if not path.startswith("benchmarks/results/") and path != "BENCHMARKS.md"]
    return {"commit": git("rev-parse", "--short=10", "HEAD").strip() or "unknown", "dirty_files": dirty}


# ---------------------------------------------------------------------------
# One run


class MachineBusy(SystemExit):
    pass


class Run:
    """One benchmark run: the idle check before, the load during, the result file after."""

    def __init__(self, name: str, args: argparse.Namespace, *, argv=None, extra_versions=(), print_fn=print):
        self.name = name
        self.args = args
        self.print = print_fn
        self.timed = getattr(args, "timed", True)
        if self.timed and args.reps < MIN_REPS and not args.allow_load:
            raise SystemExit(f"{name}: --reps {args.reps} is below the protocol's {MIN_REPS}; use --reps {MIN_REPS} "
                             "or more (or --allow-load for a quick look, which the result marks as a note)")
        self.command = "python " + os.path.relpath(sys.argv[0], ROOT) + " " + " ".join(
            sys.argv[1:] if argv is None else argv)
        self.extra_versions = tuple(extra_versions)
        self.loadavg_before = os.getloadavg()
        self.busy_before = self._wait_until_idle()
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self._t0 = time.monotonic()
        self._busy0, self._total0 = _cpu_times()
        self._own0 = _own_cpu_seconds()

    def _wait_until_idle(self) -> float:
        """Other processes' busy share; waits out a lingering load for up to IDLE_WAIT_SECONDS."""
        deadline = time.monotonic() + (0 if self.args.allow_load else IDLE_WAIT_SECONDS)
        while True:
            share = other_busy_share()
            if share <= IDLE_BUSY_SHARE or self.args.allow_load or not self.timed:
                return share
            if time.monotonic() > deadline:
                raise MachineBusy(
                    f"{self.name}: the machine is not idle: other processes keep {100 * share:.0f}% of its "
                    f"{os.cpu_count()} cores busy (load average {self.loadavg_before[0]:.2f}); stop them and rerun, "
                    "or pass --allow-load to measure anyway (the result is then marked as taken under load)")
            self.print(f"{self.name}: waiting for the machine to go idle (others use {100 * share:.0f}% of the cores)",
                       flush=True)

    def load(self) -> dict:
        busy1, total1 = _cpu_times()
        wall = time.monotonic() - self._t0
        own = _own_cpu_seconds() - self._own0
        other = max(0.0, busy1 - self._busy0 - own)
        return {
            "loadavg_before": [round(x, 2) for x in self.loadavg_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "other_busy_share_before": round(self.busy_before, 3),
            "other_busy_share_during": round(other / max(total1 - self._total0, 1e-9), 3),
            "idle": (self.busy_before <= IDLE_BUSY_SHARE),
            "allow_load": bool(self.args.allow_load),
            "wall_seconds": round(wall, 1),
        }

    def write(self, *, title: str, about: str, table: dict, results: dict, notes=(), headline: str = "") -> dict:
        """Adds the run's facts to `results` and writes the JSON atomically to --out.

        table: {"columns": [...], "rows": [[...], ...]}, cells already formatted
        as they should read in BENCHMARKS.md.
        """
        load = self.load()
        taken_under_load = self.timed and (not load["idle"] or load["other_busy_share_during"] > IDLE_BUSY_SHARE)
        result = {
            "benchmark": self.name,
            "title": title,
            "about": about,
            "headline": headline,
            "command": self.command,
            "date": self.started.isoformat(timespec="seconds"),
            "git": git_state(),
            "machine": cpu_info(),
            "versions": versions(self.extra_versions),
            "load": load,
            "timed": self.timed,
            "under_load": taken_under_load,
            "reps": self.args.reps,
            "table": table,
            "notes": list(notes),
            "results": results,
        }
        out = self.args.out
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        tmp = f"{out}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, out)
        flag = "  (TAKEN UNDER LOAD: a note, not a result)" if taken_under_load else ""
        self.print(f"{self.name}: wrote {os.path.relpath(out, ROOT)}; load average "
                   f"{load['loadavg_before'][0]} -> {load['loadavg_after'][0]}, other processes used "
                   f"{100 * load['other_busy_share_during']:.0f}% of the cores during the run{flag}", flush=True)
        return result
