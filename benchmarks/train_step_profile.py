"""Where the train step's time goes on this CPU: a JAX profiler trace, summed per part of the model.

    .venv/bin/python benchmarks/train_step_profile.py              # 5 traced steps, about 1 minute
    .venv/bin/python benchmarks/train_step_profile.py --steps 10 --top 30

The step is benchmarks/mfu.py's (the trainer's kind: value_and_grad of the loss
and Adafactor, state donated, on `--gin_file`'s model with 32 x (64 source, 64
target) random tokens). After one untimed step, `--steps` steps run under
`jax.profiler.trace`; XLA:CPU records one trace event per executed kernel
(a fusion, a dot, a copy, ...). Each kernel is attributed through the
compiled HLO's metadata (`op_name`, the JAX name stack of the operation it
came from; for a fusion around a matmul, the matmul's) to:

- a phase: forward, backward (`transpose(...)` in the name stack) or optimizer
  (outside the model's loss);
- a part of the model: the embedding and logits, attention, the dense MLPs, the
  MoE layers' router, dispatch and experts, the cross-entropy, layer norms;
- and its kind: matmul (a dot or a fusion around one) or other.

The table is milliseconds per step, summed over the part's kernels, and their
share of the step's kernel time. The kernels run on XLA:CPU's thread pool, so
kernel time can exceed wall time when two run at once; the wall time of the
traced steps is reported beside it. This is a profile, not a timed comparison:
it needs an idle machine to be read as this machine's, and runs once
(`--reps` does not apply; the protocol's idle check and load record do).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "train_step_profile"
# Parts of the model, matched in order against the lower-cased name stack of an operation.
PARTS = (
    ("cross-entropy", ("cross_entropy", "xent", "log_softmax", "logsumexp")),
    # The tied output projection is an einsum in the decoder's name stack: "btd,dv->btv".
    ("logits (output projection)", ("logits", "attend", "output_projection", "btd,dv->btv")),
    ("MoE router", ("router",)),
    ("MoE experts", ("/experts/", "grouped_matmul")),  # the named scopes of moe._gated_mlp and grouped_matmul
    ("MoE dispatch and combine", ("dispatch", "combine", "scatter", "gather", "sort", "argsort")),
    ("attention", ("attention", "self_attn", "cross_attn", "encoder_decoder_attention")),
    ("MLP (dense)", ("mlp",)),
    ("layer norm", ("layer_norm", "layernorm", "rms")),
    ("embedding", ("embed", "token_embedder")),
)
INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{[^}]*op_name="([^"]*)"')
COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
CALLS = re.compile(r"calls=%([\w.\-]+)")
MATMUL = re.compile(r"\s(?:dot|convolution)\(")
# Control flow: a loop's or a branch's trace event spans the kernels of its body, which have events of their own.
CONTROL_FLOW = re.compile(r"\s(?:while|conditional|call)\(")


def kernel_attribution(hlo_text: str) -> dict[str, tuple[str, bool]]:
    """HLO kernel name -> (the JAX name stack it came from, whether it multiplies matrices), from the
    compiled module's text. A fusion around a dot is named after the dot, not its root: XLA:CPU fuses
    the output projection into log-softmax's max, say, and the time is the matmul's. Control-flow
    instructions are left out, so that no time is counted twice."""
    matmul_in = {}  # computation -> the op_name of its first dot
    computation = None
    for line in hlo_text.splitlines():
        header = COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            continue
        match = INSTRUCTION.match(line)
        if match and computation and MATMUL.search(line):
            matmul_in.setdefault(computation, match.group(2))
    kernels = {}
    for line in hlo_text.splitlines():
        match = INSTRUCTION.match(line)
        if not match or CONTROL_FLOW.search(line):
            continue
        called = CALLS.search(line)
        if called and called.group(1) in matmul_in:
            kernels.setdefault(match.group(1), (matmul_in[called.group(1)], True))
        else:
            kernels.setdefault(match.group(1), (match.group(2), bool(MATMUL.search(line))))
    return kernels


def classify(op_name: str, matmul: bool) -> tuple[str, str, str]:
    """(phase, part, kind) of one kernel."""
    stack = op_name.lower()
    if not stack:
        phase = "unattributed"
    elif "transpose(" in stack:
        phase = "backward"
    elif "jvp(" in stack or "loss" in stack:
        phase = "forward"
    else:
        phase = "optimizer"
    part = "other"
    if phase == "optimizer":
        part = "Adafactor update"
    elif "transformer" not in stack:
        part = "loss (cross-entropy, z-loss)"  # the loss on the logits, outside the model's modules
    else:
        for label, keys in PARTS:
            if any(key in stack for key in keys):
                part = label
                break
    return phase, part, "matmul" if matmul else "other"


def kernel_events(trace_dir: str) -> list[dict]:
    """The complete ('X') events of the perfetto trace jax.profiler wrote under trace_dir."""
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise SystemExit(f"{NAME}: jax.profiler wrote no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(paths[0], "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def attribute(events: list[dict], kernels: dict[str, tuple[str, bool]], classify, *, what: str):
    """Kernel time in microseconds per classify(op_name, matmul) and per kernel name, summed over the
    trace's events that name a kernel of `kernels` (the rest are runtime events: the executable,
    thread-pool tasks). SystemExit when none does."""
    per_part, per_kernel = collections.defaultdict(float), collections.defaultdict(float)
    for event in events:
        kernel = event["name"]
        if kernel in kernels:
            per_part[classify(*kernels[kernel])] += event["dur"]
            per_kernel[kernel] += event["dur"]
    if not per_kernel:
        raise SystemExit(f"{NAME}: none of the trace's {len(events)} events names an HLO instruction of {what}; "
                         "this jaxlib's XLA:CPU does not trace its kernels")
    return per_part, per_kernel


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="gin/models/mswitch_tiny.gin")
    parser.add_argument("--steps", type=int, default=5, help="traced steps (default %(default)s)")
    parser.add_argument("--top", type=int, default=15, help="kernels listed by time (default %(default)s)")
    protocol.add_arguments(parser, name=NAME, reps=1)
    args = parser.parse_args(argv)
    if args.steps < protocol.MIN_REPS:
        parser.error(f"--steps {args.steps}: trace at least {protocol.MIN_REPS} steps (the profile's repetitions)")
    args.reps = args.steps  # one trace of --steps steps: each traced step is a repetition
    run = protocol.Run(NAME, args, argv=argv)

    import jax

    from benchmarks.mfu import MfuWorker

    worker = MfuWorker({"gin_file": args.gin_file, "batch": 32, "src_len": 64, "tgt_len": 64, "matmul_n": 256,
                        "matmul_calls": 1, "step_calls": 1, "variants": ["as_is"]})
    kernels = kernel_attribution(worker.steps["as_is"].as_text())
    trace_dir = tempfile.mkdtemp(prefix="mtmoe-profile-")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        started = time.perf_counter()
        for _ in range(args.steps):
            worker._step("as_is")
        wall = (time.perf_counter() - started) / args.steps
    events = kernel_events(trace_dir)

    per_part, per_kernel = attribute(events, kernels, classify, what="the step")
    total = sum(per_part.values())
    ms = 1e-3 / args.steps
    rows = [[phase, part, kind, f"{us * ms:.1f}", f"{100 * us / total:.1f}"]
            for (phase, part, kind), us in sorted(per_part.items(), key=lambda kv: -kv[1])]
    by_phase = collections.defaultdict(float)
    by_part = collections.defaultdict(float)
    for (phase, part, _), us in per_part.items():
        by_phase[phase] += us
        by_part[part] += us
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:args.top]
    headline = ("Kernel time per step: " + ", ".join(f"{part} {100 * us / total:.0f}%" for part, us in
                                                     sorted(by_part.items(), key=lambda kv: -kv[1])[:5])
                + f" (wall {wall:.2f} s per step, kernels {total * ms / 1e3:.2f} s).")
    run.write(
        title="Where the train step's time goes",
        about=(f"A JAX profiler trace of {args.steps} train steps of `{args.gin_file}`'s model (benchmarks/mfu.py's "
               "step: loss, gradients, Adafactor; 32 x (64 source, 64 target) tokens, float32, CPU). Each XLA:CPU "
               "kernel is attributed to a phase and a part of the model through its HLO metadata (the JAX name "
               "stack); milliseconds of kernel time per step and share of all kernel time. One trace, not a "
               "timed comparison."),
        table={"columns": ["phase", "part", "kind", "ms per step", "% of kernel time"], "rows": rows},
        headline=headline,
        notes=[f"Wall time per traced step {wall:.3f} s; kernel time per step {total * ms / 1e3:.3f} s "
               f"({sum(e['name'] in kernels for e in events)} kernel events of {len(events)} trace events attributed).",
               "By phase: " + ", ".join(f"{phase} {100 * us / total:.0f}%" for phase, us in
                                        sorted(by_phase.items(), key=lambda kv: -kv[1])) + ".",
               "Largest kernels (ms per step): " + "; ".join(
                   f"{kernel} {us * ms:.1f} ({kernels[kernel][0].split('/')[-1]})" for kernel, us in top[:8]) + "."],
        results={"steps": args.steps, "wall_seconds_per_step": wall, "kernel_seconds_per_step": total * ms / 1e3,
                 "parts": [{"phase": p, "part": q, "kind": k, "ms_per_step": us * ms} for (p, q, k), us in
                           per_part.items()],
                 "top_kernels": [{"kernel": k, "op_name": kernels[k][0], "ms_per_step": us * ms} for k, us in top]},
    )


if __name__ == "__main__":
    main()
