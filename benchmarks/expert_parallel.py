"""Times one MoE layer (forward + backward) on a mesh of CPU devices: explicit expert
parallelism (`moe.dispatch_expert_parallel`) against GSPMD partitioning and one device.

    .venv/bin/python benchmarks/expert_parallel.py             # ~3 minutes on 2 CPU cores
    .venv/bin/python benchmarks/expert_parallel.py --devices 2 --experts 8,128 --reps 7

Each core is one JAX CPU device (`--xla_force_host_platform_device_count`, set
here before JAX is imported). The mesh is data=1 x expert=N: the batch's
routing groups and the experts are both split N ways. Three settings of the
same layer, same inputs, every one compiled first and then timed once per
repetition in turn (so that load from other processes hits all alike):

- `one_device`: no mesh, as `benchmarks/moe_layer.py` runs it;
- `gspmd`: the mesh, with the explicit path switched off, so that XLA's
  partitioner lays the layer out from the logical axis constraints;
- `expert_parallel`: the mesh with the committed code: per-device routing and
  two all-to-alls over 'expert' in `shard_map`.

Gradients of all three are checked against one another before timing.
Default shapes as moe_layer.py: 8192 tokens (batch 64 x length 128, two
routing groups), d_model 512, d_ff 1024, float32, sort dispatch, training mode.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=os.cpu_count(), help="CPU devices (one per core by default)")
    parser.add_argument("--experts", default="8,128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--d_model", type=int, default=512)
    parser.add_argument("--d_ff", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "expert_parallel.json"))
    args = parser.parse_args(argv)
    if args.devices < 2:
        parser.error("--devices must be at least 2: expert parallelism needs a mesh")
    if args.reps < 3:
        parser.error("--reps must be at least 3 to report a median and a spread")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mtmoe.host_memory import retain_freed_memory

    retain_freed_memory(policy="retain")
    import jax
    import numpy as np
    from flax import linen as nn
    from jax.sharding import NamedSharding, PartitionSpec
    from moe_layer import make_step, write_result

    from mtmoe import moe, partitioning
    from mtmoe.moe_config import MoeConfig

    if len(jax.devices()) != args.devices:
        raise SystemExit(f"asked for {args.devices} CPU devices, JAX has {len(jax.devices())}: run this script in a fresh process")
    x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, args.length, args.d_model))
    cotangent = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    rng = jax.random.PRNGKey(2)
    mesh = partitioning.make_mesh(data=1, expert=args.devices)
    batch_sharding = NamedSharding(mesh, PartitionSpec(partitioning.BATCH_AXES))
    applies = moe.expert_parallel_applies

    variants = {}  # name -> (compiled step, its arguments)
    for num_experts in [int(e) for e in args.experts.split(",")]:
        layer = moe.MoeLayer(config=MoeConfig(num_experts=num_experts, dispatch="sort"), d_ff=args.d_ff)
        boxed = layer.init({"params": rng, "dropout": rng}, x)["params"]
        params = nn.unbox(boxed)
        step = make_step(layer, moe=True)
        variants[f"one_device/{num_experts}"] = (step.lower(params, x, cotangent, rng).compile(), (params, x, cotangent, rng))
        for setting in ("gspmd", "expert_parallel"):
            step = make_step(layer, moe=True)  # a fresh jit each: a cached trace would reuse the other setting's layout
            moe.expert_parallel_applies = applies if setting == "expert_parallel" else (lambda *a, **k: False)
            try:
                with partitioning.mesh_context(mesh):
                    shardings = partitioning.logical_shardings(boxed, mesh)
                    sharded = (jax.device_put(params, shardings), jax.device_put(x, batch_sharding),
                               jax.device_put(cotangent, batch_sharding), rng)
                    compiled = jax.jit(step, in_shardings=(shardings, batch_sharding, batch_sharding, None),
                                       out_shardings=(None, (shardings, batch_sharding))).lower(*sharded).compile()
            finally:
                moe.expert_parallel_applies = applies
            variants[f"{setting}/{num_experts}"] = (compiled, sharded)
        print(f"compiled {num_experts} experts", flush=True)

    reference = {}
    for name, (compiled, arguments) in variants.items():
        loss, grads = jax.block_until_ready(compiled(*arguments))
        experts = name.split("/")[1]
        if experts not in reference:
            reference[experts] = (loss, grads)
            continue
        worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference[experts][1])))
        print(f"{name:22s} loss {float(loss):.6f} vs one device {float(reference[experts][0]):.6f}, "
              f"largest gradient difference {worst:.2e}")
        if worst > 1e-3:
            raise SystemExit(f"{name}: gradients differ from one device by {worst:.2e}")

    times = {name: [] for name in variants}
    for rep in range(args.reps):
        for name, (compiled, arguments) in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*arguments))
            times[name].append(1e3 * (time.perf_counter() - start))
        print(f"rep {rep + 1}/{args.reps}: " + "  ".join(f"{n} {t[-1]:.0f}" for n, t in times.items()), flush=True)

    rows = []
    print(f"\n{'variant':24s} {'median ms':>10s} {'min..max ms':>17s} {'x one device':>13s}")
    for name, values in times.items():
        experts = name.split("/")[1]
        median = statistics.median(values)
        versus = median / statistics.median(times[f"one_device/{experts}"])
        rows.append({"variant": name, "median_ms": median, "min_ms": min(values), "max_ms": max(values),
                     "times_ms": values, "vs_one_device": versus})
        print(f"{name:24s} {median:10.1f} {min(values):8.1f}..{max(values):<8.1f} {versus:13.2f}")
    result = {
        "benchmark": "expert_parallel", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__},
        "command": " ".join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
        "config": vars(args), "rows": rows,
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
