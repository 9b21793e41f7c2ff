"""Where decoding's time goes on this CPU: a JAX profiler trace of benchmarks/hf_switch.py's decoding tasks.

    .venv/bin/python benchmarks/decode_profile.py                      # beam32 and greedy1, 5 traced calls each
    .venv/bin/python benchmarks/decode_profile.py --tasks beam32 --calls 10

The model and the calls are hf_switch.py's `mtmoe-relu` variant (the tiny
model with HF's ReLU MLP, `--gin_file`; `predict_batch` on random sources of
`--src_len` tokens, `--gen` tokens generated per sentence, every output full
length): the calls whose speed that benchmark compares with Hugging Face's.
After one untimed call per task, `--calls` calls run under `jax.profiler.trace`;
XLA:CPU records one trace event per executed kernel, attributed through the
compiled HLO's metadata (the JAX name stack; for a fusion around a matmul,
the matmul's: the output projection fused into log-softmax counts as logits) to:

- a phase: the encoder (once per call), the decoder steps (the model inside
  the decoding loop), the search (the loop's own work: log-softmax, top-k,
  reordering the beams' caches, bookkeeping) or set-up (the rest);
- a part: the logits, attention, the dense MLPs, the MoE layers' router,
  dispatch and experts, layer norms, the embedding; in the search, top-k,
  the beams' cache reorder and the rest of the log-softmax;
- a kind: matmul or other.

Milliseconds of kernel time per call and share of all kernel time; the
kernels run on XLA:CPU's thread pool, so kernel time can exceed wall time.
This is a profile, not a timed comparison: one trace per task, read as this
machine's only when it is idle (the protocol's idle check and load record apply).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402
from benchmarks.train_step_profile import PARTS, attribute, kernel_attribution, kernel_events  # noqa: E402

NAME = "decode_profile"
# The decoding loop's own work, matched against the lower-cased name stack of an operation outside the model.
SEARCH_PARTS = (
    ("top-k", ("top_k",)),
    ("beams' cache reorder", ("_take", "gather_beams", "gather_cache")),
    ("log-softmax", ("log_softmax", "logsumexp")),
)


def classify(op_name: str, matmul: bool) -> tuple[str, str, str]:
    """(phase, part, kind) of one decoding kernel."""
    stack = op_name.lower()
    in_loop = "while/body" in stack
    in_model = "transformer." in stack
    if in_model:
        phase = "decoder steps" if in_loop else ("encoder" if "transformer.encode" in stack else "set-up")
        parts = PARTS
    else:
        phase = "search" if in_loop else "set-up"
        parts = SEARCH_PARTS
    part = next((label for label, keys in parts if any(key in stack for key in keys)),
                "search bookkeeping" if phase == "search" else "other")
    return phase, part, "matmul" if matmul else "other"


def profile_task(worker, task: str, calls: int) -> dict:
    """One trace of `calls` calls of a prepared task: kernel time per (phase, part, kind), wall time per call."""
    import jax

    batch, decode = worker.inputs[task]
    kernels = kernel_attribution(decode.lower(worker.params, batch).compile().as_text())
    worker.run(task)  # untimed: the executable is loaded and warm
    trace_dir = tempfile.mkdtemp(prefix="mtmoe-decode-profile-")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        started = time.perf_counter()
        for _ in range(calls):
            worker.run(task)
        wall = (time.perf_counter() - started) / calls
    per_part, per_kernel = attribute(kernel_events(trace_dir), kernels, classify, what=task)
    ms = 1e-3 / calls
    total = sum(per_part.values())
    return {"wall_seconds_per_call": wall, "kernel_seconds_per_call": total * ms / 1e3,
            "parts": [{"phase": p, "part": q, "kind": k, "ms_per_call": us * ms, "share": us / total}
                      for (p, q, k), us in sorted(per_part.items(), key=lambda kv: -kv[1])],
            "top_kernels": [{"kernel": k, "op_name": kernels[k][0], "ms_per_call": us * ms}
                            for k, us in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:10]]}


def shares(profile: dict, key: str) -> list[tuple[str, float]]:
    """Share of kernel time per phase or per part, largest first."""
    total = collections.defaultdict(float)
    for row in profile["parts"]:
        total[row[key]] += row["share"]
    return sorted(total.items(), key=lambda kv: -kv[1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="gin/models/mswitch_tiny.gin")
    parser.add_argument("--tasks", default="beam32,greedy1", help="hf_switch.py's decoding tasks (default %(default)s)")
    parser.add_argument("--calls", type=int, default=protocol.MIN_REPS, help="traced calls per task (default %(default)s)")
    parser.add_argument("--src_len", type=int, default=64)
    parser.add_argument("--gen", type=int, default=24, help="tokens generated per sentence (hf_switch.py's default)")
    protocol.add_arguments(parser, name=NAME, reps=1)
    args = parser.parse_args(argv)
    if args.calls < protocol.MIN_REPS:
        parser.error(f"--calls {args.calls}: trace at least {protocol.MIN_REPS} calls (the profile's repetitions)")
    tasks = [t for t in args.tasks.split(",") if t]
    from benchmarks import hf_switch

    for task in tasks:
        try:
            hf_switch.decode_task(task)
        except ValueError as err:
            parser.error(str(err))
    args.reps = args.calls  # one trace of --calls calls per task: each traced call is a repetition
    run = protocol.Run(NAME, args, argv=argv)

    arch = hf_switch.read_architecture(args.gin_file)
    worker = hf_switch.MtmoeWorker(arch, {"variant": "mtmoe-relu", "dispatch": "sort", "batch": 32,
                                          "src_len": args.src_len, "tgt_len": args.src_len, "gen": args.gen,
                                          "train_steps": 1})
    profiles = {}
    for task in tasks:
        worker.prepare(task)
        profiles[task] = profile_task(worker, task, args.calls)

    rows = []
    for task, profile in profiles.items():
        rows += [[task, r["phase"], r["part"], r["kind"], f"{r['ms_per_call']:.1f}", f"{100 * r['share']:.1f}"]
                 for r in profile["parts"] if r["share"] >= 0.005]
    headline = " ".join(
        f"{task}: " + ", ".join(f"{part} {100 * share:.0f}%" for part, share in shares(profile, "part")[:4])
        + f" (wall {1e3 * profile['wall_seconds_per_call']:.0f} ms a call)." for task, profile in profiles.items())
    notes = []
    for task, profile in profiles.items():
        notes.append(f"{task}: wall {1e3 * profile['wall_seconds_per_call']:.1f} ms per call, kernel time "
                     f"{1e3 * profile['kernel_seconds_per_call']:.1f} ms; by phase: " + ", ".join(
                         f"{phase} {100 * share:.0f}%" for phase, share in shares(profile, "phase")) + ".")
        notes.append(f"{task}: largest kernels (ms per call): " + "; ".join(
            f"{k['kernel']} {k['ms_per_call']:.1f} ({k['op_name'].split('/')[-1]})"
            for k in profile["top_kernels"][:6]) + ".")
    run.write(
        title="Where decoding's time goes",
        about=(f"A JAX profiler trace of {args.calls} calls of each of benchmarks/hf_switch.py's decoding tasks "
               f"({', '.join(tasks)}: beam 4 or greedy at the batch named, {args.src_len}-token random sources, "
               f"{args.gen} tokens generated per sentence) on its `mtmoe-relu` model (`{args.gin_file}`, HF's "
               "ReLU MLP), float32, CPU. Each XLA:CPU kernel is attributed to a phase and a part through its HLO "
               "metadata (the JAX name stack); milliseconds of kernel time per call and share of the task's kernel "
               "time (parts under 0.5% left out). One trace per task, not a timed comparison."),
        table={"columns": ["task", "phase", "part", "kind", "ms per call", "% of kernel time"], "rows": rows},
        headline=headline,
        notes=notes,
        results={"calls": args.calls, "profiles": profiles},
    )


if __name__ == "__main__":
    main()
