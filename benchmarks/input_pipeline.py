"""Does the training input pipeline keep up with the train step? (target: at least 5x the rows the step consumes)

    .venv/bin/python benchmarks/input_pipeline.py                    # the demo's model and mixture, ~2 minutes
    .venv/bin/python benchmarks/input_pipeline.py --mixture translate_all --reps 7

The pipeline is built exactly as mtmoe.train builds it, from the gin file
(default gin/experiments/demo.gin, what `make demo` trains): its DatasetConfig
(mixture, feature lengths, batch size, shuffle buffer, token cache) through
`input_pipeline.make_source(...).train_batches`, seed 0. The train step is the
trainer's (`trainer.make_train_step` with the gin file's model, optimizer and
learning-rate schedule), jitted on one device. Three variants, interleaved:

- pipeline alone: batches drawn as fast as they come for --seconds;
- train step alone: --steps steps on one batch drawn earlier, so no data work;
- train step fed by the pipeline: --steps steps, each on the next batch, as in
  training (tf.data's threads compete with the step for the same cores).

Rates are packed rows/s, the sentence pairs and non-padding target tokens those
rows hold per second, and seconds per step. Headroom = pipeline rows/s over the
step's rows/s, per repetition. Building the pipeline up to its first batch
(every task's graph and shuffle buffer) is timed once, before the repetitions.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "input_pipeline"
TARGET_HEADROOM = 5.0
PIPELINE, ALONE, FED = "pipeline alone", "train step alone", "train step fed by the pipeline"


def batch_counts(batch) -> dict[str, int]:
    """Packed rows, sentence pairs and non-padding target tokens of one batch of [B, L] features."""
    import numpy as np

    segments = batch["decoder_segment_ids"]
    return {"rows": int(segments.shape[0]), "pairs": int(segments.max(axis=1).sum()),  # segments are 1..n per row
            "target_tokens": int(np.count_nonzero(batch["decoder_target_tokens"]))}


def rates(counts: list[dict], seconds: float) -> dict:
    return {f"{key}_per_s": sum(c[key] for c in counts) / seconds for key in ("rows", "pairs", "target_tokens")}


class TrainStep:
    """The trainer's jitted step on one device, its state kept from call to call."""

    def __init__(self, *, model, optimizer, learning_rate, batch):
        import jax
        import jax.numpy as jnp
        from flax import linen as nn

        from mtmoe import trainer

        shapes = {"encoder_input_tokens": batch["encoder_input_tokens"].shape,
                  "decoder_input_tokens": batch["decoder_input_tokens"].shape}
        self.params = nn.unbox(model.get_initial_variables(jax.random.PRNGKey(0), input_shapes=shapes)["params"])
        tx = optimizer(learning_rate=learning_rate)
        self.opt_state = tx.init(self.params)
        self.step_fn = jax.jit(trainer.make_train_step(model=model, optimizer=tx, learning_rate=learning_rate,
                                                       num_microbatches=1), donate_argnums=(0, 1))
        self.healthy, self.rng, self.step = jnp.asarray(True), jax.random.PRNGKey(1), 0

    def run(self, batches) -> float:
        """Seconds for one step on each batch of `batches` (an iterable), until the last step's result is ready."""
        import jax
        import jax.numpy as jnp

        started = time.perf_counter()
        for batch in batches:
            self.params, self.opt_state, self.healthy, _ = self.step_fn(
                self.params, self.opt_state, self.healthy, jnp.asarray(self.step), batch, self.rng)
            self.step += 1
        jax.block_until_ready(self.params)
        return time.perf_counter() - started


def drain(batches, seconds: float) -> dict:
    """Batches drawn as fast as they come for `seconds`."""
    counts, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        counts.append(batch_counts(next(batches)))
    return {**rates(counts, time.perf_counter() - started), "batches": len(counts)}


def train(step: TrainStep, batches, steps: int) -> dict:
    """`steps` train steps, each on the next of `batches`."""
    counts = []

    def counted():
        for _ in range(steps):
            batch = next(batches)
            counts.append(batch_counts(batch))
            yield batch

    seconds = step.run(counted())
    return {**rates(counts, seconds), "step_s": seconds / steps}


def times(s: dict, fmt: str) -> str:
    """'24.0x (23.1..25.2)': a ratio's spread."""
    return f"{fmt.format(s['median'])}x ({fmt.format(s['min'])}..{fmt.format(s['max'])})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="gin/experiments/demo.gin",
                        help="the training configuration: model, optimizer, mixture, lengths, batch size")
    parser.add_argument("--mixture", default=None, help="another task or mixture (default: the gin file's)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds the pipeline is drained per repetition")
    parser.add_argument("--steps", type=int, default=10, help="train steps per repetition and step variant")
    parser.add_argument("--warmup_batches", type=int, default=10,
                        help="batches drawn before timing (every task's shuffle buffer fills on its first draws)")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    run = protocol.Run(NAME, args, argv=argv)

    from mtmoe import host_memory

    host_memory.retain_freed_memory()  # the trainer's host memory policy (mtmoe.train), before JAX allocates
    import gin

    from mtmoe import command_line, input_pipeline

    bindings = ["MODEL_DIR='/tmp/unused'"] + ([f"MIXTURE_OR_TASK_NAME='{args.mixture}'"] if args.mixture else [])
    command_line.parse_gin(gin_files=[args.gin_file], bindings=bindings)
    dataset_cfg = gin.query_parameter("train.train.train_dataset_cfg").scoped_configurable_fn()
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    optimizer = gin.query_parameter("%OPTIMIZER").scoped_configurable_fn  # called by TrainStep
    learning_rate = gin.query_parameter("train.train.learning_rate").scoped_configurable_fn()

    started = time.perf_counter()
    source = input_pipeline.make_source(dataset_cfg, seed=0)
    batches = source.train_batches(batch_size=dataset_cfg.batch_size, skip_batches=0, process_index=0,
                                   process_count=1)
    first = next(batches)
    startup = time.perf_counter() - started
    for _ in range(args.warmup_batches):
        next(batches)
    warmup = time.perf_counter() - started - startup
    print(f"{source.describe()}: first batch after {startup:.1f} s, {args.warmup_batches} more in {warmup:.1f} s",
          flush=True)

    step = TrainStep(model=model, optimizer=optimizer, learning_rate=learning_rate, batch=first)
    compile_seconds = step.run([first, first])  # compilation and first-touch allocation, untimed
    measured = {PIPELINE: [], ALONE: [], FED: []}
    for rep, order in enumerate(protocol.orders(list(measured), args.reps)):
        for variant in order:
            if variant == PIPELINE:
                figures = drain(batches, args.seconds)
            else:
                figures = train(step, batches if variant == FED else itertools.repeat(first), args.steps)
            measured[variant].append(figures)
            print(f"rep {rep + 1} {variant}: {figures['rows_per_s']:.0f} rows/s"
                  + (f", {figures['step_s']:.3f} s/step" if "step_s" in figures else ""), flush=True)

    keys = ("rows_per_s", "pairs_per_s", "target_tokens_per_s")
    summary = {v: {key: protocol.spread(f[key] for f in fs) for key in (*keys, "step_s") if key in fs[0]}
               for v, fs in measured.items()}
    headroom = protocol.ratio_spread([f["rows_per_s"] for f in measured[PIPELINE]],
                                     [f["rows_per_s"] for f in measured[ALONE]])
    slowdown = protocol.ratio_spread([f["step_s"] for f in measured[FED]], [f["step_s"] for f in measured[ALONE]])
    met = "met" if headroom["median"] >= TARGET_HEADROOM else "not met"

    def row(variant):
        s = summary[variant]
        return [variant, *(protocol.fmt_spread(s[key], "{:.0f}") for key in keys),
                protocol.fmt_spread(s["step_s"], "{:.0f}", 1000) if "step_s" in s else "-"]

    lengths = dict(dataset_cfg.task_feature_lengths)
    run.write(
        title="Input pipeline against the train step",
        about=(f"`{dataset_cfg.mixture_or_task_name}` as `{args.gin_file}` trains on it (feature lengths "
               f"{lengths['inputs']}/{lengths['targets']}, batch {dataset_cfg.batch_size}, shuffle buffer "
               f"{dataset_cfg.shuffle_buffer_size or input_pipeline.MIXTURE_SHUFFLE_BUFFER}), read through "
               f"`input_pipeline.make_source(...).train_batches` as mtmoe.train reads it, against the trainer's "
               f"jitted train step of that gin file's model on one device. Per repetition: the pipeline drained "
               f"for {args.seconds:g} s; {args.steps} steps on one batch drawn earlier (no data work); {args.steps} "
               "steps each on the pipeline's next batch, as in training. Headroom: pipeline rows/s over the step's, "
               "per repetition; target at least 5x."),
        table={"columns": ["measurement", "packed rows/s", "sentence pairs/s", "target tokens/s", "ms per step"],
               "rows": [row(v) for v in measured]},
        headline=(f"Headroom {times(headroom, '{:.1f}')}: the target of at least {TARGET_HEADROOM:.0f}x is {met}. "
                  f"Fed by the pipeline, a step takes {times(slowdown, '{:.2f}')} as long as alone."),
        notes=[f"Once, before the repetitions: building the pipeline (`{source.describe()}`) up to its first batch "
               f"took {startup:.1f} s, and compiling the train step {compile_seconds:.1f} s."],
        results={"gin_file": args.gin_file, "mixture": dataset_cfg.mixture_or_task_name,
                 "task_feature_lengths": lengths, "batch_size": dataset_cfg.batch_size,
                 "shuffle_buffer_size": dataset_cfg.shuffle_buffer_size, "startup_s": startup,
                 "warmup_batches": args.warmup_batches, "warmup_s": warmup, "compile_s": compile_seconds,
                 "summary": summary, "headroom": headroom, "fed_over_alone_step_time": slowdown,
                 "runs": measured},
    )


if __name__ == "__main__":
    main()
