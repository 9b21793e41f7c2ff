"""Timeline of the sort-path MoE layer step at 8 and 128 experts, to see this machine's slow periods.

    .venv/bin/python benchmarks/host_slow_periods.py --seconds 120

This virtual machine has periods of tens of seconds in which the same
compiled step, in the same process, runs much slower: measured 2026-11-28,
the 128-expert step of `benchmarks/moe_layer.py` went from ~690 to ~1000 ms
(1.36-1.44x in five measurements) and the 8-expert step from ~570 to ~640 ms (1.10-1.12x), with no steal
time in /proc/stat, no page faults and no other process running. They come
from outside the process (the host), so `moe_layer.py` repetitions caught in
one show a 128/8 ratio near 1.5 instead of near 1.2. A streaming probe (an
elementwise multiply over 804 MB) gets *faster* in those periods (~31 vs ~45
ms), which is how this script labels them; we do not know the host-side cause.

Each round times the probe, then one step at 8 and one at 128 experts (the
default `moe_layer.py` shapes: 8192 tokens, d_model 512, d_ff 1024, float32,
retain allocator), and prints one line; at the end, the medians and the 128/8
ratio inside and outside the slow periods.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from mtmoe.host_memory import retain_freed_memory  # noqa: E402

retain_freed_memory(policy="retain")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.moe_layer import make_step  # noqa: E402
from mtmoe.moe import MoeLayer  # noqa: E402
from mtmoe.moe_config import MoeConfig  # noqa: E402

SLOW_PROBE_MS = 40.0  # the probe took 28-37 ms inside slow periods and 44-51 ms outside (2026-11-28)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (64, 128, 512), jnp.float32)  # [B, L, D]
    cotangent = jax.random.normal(jax.random.PRNGKey(1), x.shape, jnp.float32)
    steps = {}
    for experts in (8, 128):
        layer = MoeLayer(config=MoeConfig(num_experts=experts, dispatch="sort"), d_ff=1024)
        params = layer.init({"params": key, "dropout": key}, x)["params"]
        step = make_step(layer, moe=True)
        jax.block_until_ready(step(params, x, cotangent, key))
        steps[experts] = (step, params)
    stream = jnp.ones((201_000_000,), jnp.float32)  # 804 MB, the size of the 128 experts' weights
    probe = jax.jit(lambda a: a * 1.0001)
    jax.block_until_ready(probe(stream))

    def timed(fn) -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn())
        return 1e3 * (time.perf_counter() - start)

    rounds = []
    deadline = time.time() + args.seconds
    while time.time() < deadline:
        row = {"probe": timed(lambda: probe(stream))}
        for experts, (step, params) in steps.items():
            row[experts] = timed(lambda step=step, params=params: step(params, x, cotangent, key))
        row["slow"] = row["probe"] < SLOW_PROBE_MS
        rounds.append(row)
        print(f"{time.strftime('%H:%M:%S')} probe {row['probe']:5.1f} ms  8 experts {row[8]:6.1f} ms  "
              f"128 experts {row[128]:6.1f} ms  ratio {row[128] / row[8]:.2f}{'  slow period' if row['slow'] else ''}",
              flush=True)
    for label, subset in (("outside slow periods", [r for r in rounds if not r["slow"]]),
                          ("inside slow periods", [r for r in rounds if r["slow"]])):
        if subset:
            fewest, most = statistics.median(r[8] for r in subset), statistics.median(r[128] for r in subset)
            print(f"{label}: {len(subset)} rounds, median 8 experts {fewest:.0f} ms, 128 experts {most:.0f} ms, "
                  f"ratio {most / fewest:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
