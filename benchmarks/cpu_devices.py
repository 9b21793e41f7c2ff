"""The whole train step on one CPU device against one device per core: why mtmoe.train splits the cores.

    .venv/bin/python benchmarks/cpu_devices.py                 # 5 repetitions, ~3 minutes on 2 cores
    .venv/bin/python benchmarks/cpu_devices.py --reps 7 --steps 10

The demo's model and batch (`gin/experiments/demo.gin`: 8 experts at every other
FFN, 64 rows x 32 source and 32 target tokens), its step built as mtmoe.train
builds it (experts_scaling.TrainStep: the trainer's jitted step with the
Adafactor update, the finite-or-keep guard and donated state), on three meshes
in one process with one CPU device per core (`--xla_force_host_platform_device_count`,
set here before JAX starts):

- one device: the mesh of a JAX process left at its default of one CPU device
  (mtmoe.train with MTMOE_CPU_DEVICES=1);
- data=N: the batch split over the N devices, parameters replicated, gradients
  averaged: mtmoe.train's default on a CPU-only machine (mtmoe/cpu_devices.py);
- expert=N: the same batch split, each device holding 8/N of the experts, the
  tokens swapped between devices by all-to-all (`--gin.EXPERT_PARALLELISM=N`).

A one-device step takes as long in this process as in one with JAX's single
CPU device (checked on a 2-core Intel Xeon: 489 against 494 ms, medians of 5),
so the three can be interleaved in one process: every mesh is compiled and run
`--warmup_steps` times first, then each repetition times `--steps` steps back
to back on every mesh, in an order of `protocol.orders`. Synthetic batches
(random ids, no padding), as experts_scaling.py.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "cpu_devices"
GIN_FILE = "gin/experiments/demo.gin"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default=GIN_FILE, help="the training configuration (default: %(default)s)")
    parser.add_argument("--devices", type=int, default=None, help="CPU devices (default: one per core)")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps after the first (compiling) one")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mesh and repetition")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)

    from mtmoe import cpu_devices, host_memory

    count = args.devices or cpu_devices.cores()
    if count < 2 or args.steps < 1:
        parser.error(f"--devices {count}: at least 2 (one device per core needs 2 cores), and --steps at least 1")
    os.environ[cpu_devices.ENV] = str(count)
    cpu_devices.split_cores()  # as mtmoe.train does, before JAX starts
    run = protocol.Run(NAME, args, argv=argv)
    host_memory.apply_for_command_line()  # as mtmoe.train does, before JAX allocates
    import jax

    if jax.device_count() != count:
        parser.error(f"JAX has {jax.device_count()} devices, not {count}: XLA_FLAGS sets {cpu_devices.FLAG} "
                     f"already; unset it")

    from benchmarks.experts_scaling import TrainStep, measure

    meshes = {"one device": {}, f"data={count}": {"data": count}, f"expert={count}": {"expert": count}}
    steps, setup = {}, {}
    for name, mesh in meshes.items():
        steps[name] = step = TrainStep(gin_file=args.gin_file, num_experts=8, **mesh)
        first = step.run(1)  # compiles
        warm = [step.run(1) for _ in range(args.warmup_steps)]
        setup[name] = {"compile_and_first_step_s": first, "warmup_steps_s": warm}
        print(f"{name}: compiled and ran the first step in {first:.1f} s", flush=True)
    seconds = measure(steps, args.reps, args.steps)

    base = "one device"
    some = steps[base]
    tokens = some.batch_size * some.tgt_len
    summary = {name: {"step_seconds": protocol.spread(seconds[name]),
                      "target_tokens_per_s": protocol.spread(tokens / s for s in seconds[name]),
                      "speedup_over_one_device": protocol.ratio_spread(seconds[base], seconds[name])}
               for name in steps}
    default = f"data={count}"
    gain = summary[default]["speedup_over_one_device"]
    rows = [[name, protocol.fmt_spread(s["step_seconds"], "{:.0f}", scale=1000),
             protocol.fmt_spread(s["target_tokens_per_s"], "{:.0f}"),
             f"{s['speedup_over_one_device']['median']:.2f}x ({s['speedup_over_one_device']['min']:.2f}.."
             f"{s['speedup_over_one_device']['max']:.2f})"] for name, s in summary.items()]
    run.write(
        title="The train step on one CPU device and on one device per core",
        about=(f"The trainer's jitted train step of `{args.gin_file}`'s model ({some.num_params / 1e6:.1f}M "
               f"parameters, 8 experts) on one CPU device, and with the batch split over {count} devices (one per "
               f"core; `data={count}` is mtmoe.train's default on a CPU-only machine) or the experts split over them "
               f"(`expert={count}`). Batch {some.batch_size} x ({some.src_len} source, {some.tgt_len} target) tokens; "
               f"{args.steps} steps back to back per repetition, the meshes interleaved."),
        table={"columns": ["mesh", "ms per step", "target tokens/s", "speed-up over one device"], "rows": rows},
        headline=(f"Over one device per core ({count}), the train step runs {gain['median']:.2f}x "
                  f"({gain['min']:.2f}..{gain['max']:.2f}) as fast as on one device "
                  f"({1000 * summary[default]['step_seconds']['median']:.0f} against "
                  f"{1000 * summary[base]['step_seconds']['median']:.0f} ms)."),
        notes=["Untimed, before the repetitions: the first step (compilation included), then the "
               f"{args.warmup_steps} warm-up steps, in seconds: " + "; ".join(
                   f"{name} {s['compile_and_first_step_s']:.1f}, " + "+".join(f"{x:.1f}" for x in s["warmup_steps_s"])
                   for name, s in setup.items()) + "."],
        results={"gin_file": args.gin_file, "devices": count, "batch_size": some.batch_size,
                 "src_len": some.src_len, "tgt_len": some.tgt_len, "steps_per_rep": args.steps,
                 "warmup_steps": args.warmup_steps, "setup": setup, "summary": summary, "runs": seconds},
    )


if __name__ == "__main__":
    main()
