"""Input pipeline throughput against what the tiny model's train step consumes.

    python benchmarks/input_pipeline.py                      # translate_101, demo model, ~2 min
    python benchmarks/input_pipeline.py --mixture translate_all --seconds 60

One run, three measurements, on this machine:
  1. pipeline: `seqio.get_dataset(<mixture>, EncDecFeatureConverter(pack=True))`
     batched exactly as mtmoe.train does it (mtmoe.input_pipeline.make_dataset), drained
     as fast as it goes: packed rows/s, sentence pairs/s, target and input tokens/s,
     and the start-up time (building every task's graph and the first batch);
  2. train step alone: the jitted train step of the gin model (default: the
     demo's tiny mSwitch, gin/experiments/demo.gin) on one real batch, repeated:
     the rows/s the step consumes;
  3. both together: the step fed from the pipeline (tf.data prefetches in its
     own threads, competing for the same cores).
Headroom = pipeline rows/s / step rows/s; the target is >= 5x. Prints a
Markdown table (BENCHMARKS.md) and writes benchmarks/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixture", default="translate_101")
    parser.add_argument(
        "--gin_file",
        default="gin/experiments/demo.gin",
        help="the model and its TASK_FEATURE_LENGTHS / BATCH_SIZE",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="time spent draining the pipeline")
    parser.add_argument(
        "--warmup_batches",
        type=int,
        default=20,
        help="batches drawn before timing: every task fills its shuffle buffer first",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed train steps (after 2 warm-up steps)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "input_pipeline.json"))
    return parser.parse_args(argv)


def batch_counts(batch) -> dict[str, int]:
    """Rows, packed sentence pairs and non-padding tokens of one <int32>[B, L] feature batch."""
    import numpy as np

    segments = batch["decoder_segment_ids"]  # [B, Lt]
    return {
        "rows": segments.shape[0],
        "pairs": int(segments.max(axis=1).sum()),  # segments are 1..n per row
        "target_tokens": int(np.count_nonzero(batch["decoder_target_tokens"])),
        "input_tokens": int(np.count_nonzero(batch["encoder_input_tokens"])),
    }


def measure_pipeline(*, mixture: str, lengths, batch_size: int, seconds: float, warmup_batches: int) -> dict:
    from mtmoe import input_pipeline

    start = time.perf_counter()
    dataset = input_pipeline.make_dataset(
        mixture_or_task_name=mixture,
        task_feature_lengths=lengths,
        split="train",
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        pack=True,
        num_epochs=None,
    )
    iterator = dataset.as_numpy_iterator()
    first = next(iterator)
    startup = time.perf_counter() - start
    for _ in range(warmup_batches):  # seqio shuffles each task through a 1000-example buffer
        next(iterator)
    warmup = time.perf_counter() - start - startup
    totals = dict.fromkeys(("rows", "pairs", "target_tokens", "input_tokens"), 0)
    start = time.perf_counter()
    batches = 0
    while time.perf_counter() - start < seconds:
        for key, value in batch_counts(next(iterator)).items():
            totals[key] += value
        batches += 1
    elapsed = time.perf_counter() - start
    return {
        "startup_s": startup,
        "warmup_s": warmup,
        "warmup_batches": warmup_batches,
        "batches": batches,
        "seconds": elapsed,
        **{f"{key}_per_s": value / elapsed for key, value in totals.items()},
        "first_batch": first,
        "iterator": iterator,
    }


def measure_train_step(*, model, batch, steps: int, iterator=None) -> dict:
    """Seconds per jitted train step on `batch` (or on fresh batches from `iterator`)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from mtmoe import optimizers, trainer

    lengths = {
        "encoder_input_tokens": batch["encoder_input_tokens"].shape,
        "decoder_input_tokens": batch["decoder_input_tokens"].shape,
    }
    params = nn.unbox(model.get_initial_variables(jax.random.PRNGKey(0), input_shapes=lengths)["params"])
    schedule = optimizers.rsqrt_schedule(base_learning_rate=1.0, warmup_steps=300)
    tx = optimizers.adafactor(learning_rate=schedule)
    opt_state = tx.init(params)
    step_fn = jax.jit(
        trainer.make_train_step(model=model, optimizer=tx, learning_rate=schedule, num_microbatches=1),
        donate_argnums=(0, 1),
    )
    healthy, rng = jnp.asarray(True), jax.random.PRNGKey(1)
    rows = 0
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps: compilation, first-touch allocation
            jax.block_until_ready(params)
            start, rows = time.perf_counter(), 0
        current = next(iterator) if iterator is not None else batch
        params, opt_state, healthy, metrics = step_fn(
            params, opt_state, healthy, jnp.asarray(step), current, rng
        )
        rows += current["decoder_segment_ids"].shape[0]
    jax.block_until_ready(params)
    elapsed = time.perf_counter() - start
    return {
        "steps": steps,
        "seconds": elapsed,
        "step_s": elapsed / steps,
        "rows_per_s": rows / elapsed,
        "loss": float(metrics["loss"]),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import gin
    import jax

    from mtmoe import command_line

    command_line.parse_gin(gin_files=[args.gin_file], bindings=["MODEL_DIR='/tmp/unused'"])
    lengths = dict(gin.query_parameter("%TASK_FEATURE_LENGTHS"))
    batch_size = int(gin.query_parameter("%BATCH_SIZE"))
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()

    pipeline = measure_pipeline(
        mixture=args.mixture,
        lengths=lengths,
        batch_size=batch_size,
        seconds=args.seconds,
        warmup_batches=args.warmup_batches,
    )
    first, iterator = pipeline.pop("first_batch"), pipeline.pop("iterator")
    alone = measure_train_step(model=model, batch=first, steps=args.steps)
    together = measure_train_step(model=model, batch=first, steps=args.steps, iterator=iterator)
    pairs_per_row = pipeline["pairs_per_s"] / pipeline["rows_per_s"]
    result = {
        "mixture": args.mixture,
        "gin_file": args.gin_file,
        "task_feature_lengths": lengths,
        "batch_size": batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min_at_end": os.getloadavg()[0],  # other processes on the same cores
        "jax_devices": [str(d) for d in jax.devices()],
        "pipeline": pipeline,
        "train_step": alone,
        "train_step_fed_by_pipeline": together,
        "headroom": pipeline["rows_per_s"] / alone["rows_per_s"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    p = pipeline
    print(
        f"\n{args.mixture}, TASK_FEATURE_LENGTHS {lengths}, BATCH_SIZE {batch_size}, "
        f"model {args.gin_file}, {result['machine']}, "
        f"load average {result['load_average_1min_at_end']:.1f} at the end\n"
    )
    print("| measurement | packed rows/s | sentence pairs/s | target tokens/s | input tokens/s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| pipeline alone (first batch after {p['startup_s']:.0f} s, "
        f"{p['warmup_batches']} more in {p['warmup_s']:.0f} s) | {p['rows_per_s']:.0f} | "
        f"{p['pairs_per_s']:.0f} | {p['target_tokens_per_s']:.0f} | {p['input_tokens_per_s']:.0f} |"
    )
    for name, run in (("train step alone", alone), ("train step fed by the pipeline", together)):
        scale = run["rows_per_s"] / p["rows_per_s"]
        print(
            f"| {name} ({run['step_s'] * 1000:.0f} ms/step) | {run['rows_per_s']:.0f} | "
            f"{run['rows_per_s'] * pairs_per_row:.0f} | {p['target_tokens_per_s'] * scale:.0f} | "
            f"{p['input_tokens_per_s'] * scale:.0f} |"
        )
    print(
        f"\nheadroom (pipeline / train step): {result['headroom']:.1f}x (target >= 5x); "
        f"step slowdown when fed by the pipeline: {together['step_s'] / alone['step_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
