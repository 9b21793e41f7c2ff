"""The whole train step from 8 to 128 experts at equal FLOPs per token: what more experts cost the trainer.

    .venv/bin/python benchmarks/experts_scaling.py                        # 5 repetitions, ~2 minutes
    .venv/bin/python benchmarks/experts_scaling.py --experts 8,128 --reps 7

The model, optimizer, learning-rate schedule, batch size and feature lengths
are the demo's (`gin/experiments/demo.gin`: the tiny mSwitch at d_model 96,
2+2 layers, an MoE layer at every other FFN, top-1 routing, groups of 512
tokens; Adafactor; 64 rows x 32 source and 32 target tokens), with only
NUM_EXPERTS bound to each count. Every expert keeps the dense MLP's width
(EXPERT_MLP_DIM unset) and each token goes to one expert, so the expert FLOPs
per token stay equal while the parameters grow with the experts; the router's
(2 x d_model x experts per token) and the optimizer's work grow with them.

The step is the trainer's own, built as mtmoe.train builds it:
`trainer.state_layout`, `trainer.initialize_state` and `trainer.compile_steps`
on a one-device mesh (forward, backward, the Adafactor update, the
finite-or-keep guard; parameters and optimizer state donated), called as the
train loop calls it (mesh context, sharded batch, step number, dropout key).
The batch is synthetic: random token ids over the embedded vocabulary, one
sentence pair per row, the same batch every step, so no input pipeline runs.

Each expert count is compiled and run `--warmup_steps` times untimed first; a
repetition then times `--steps` steps back to back for every count, in an
order of `protocol.orders`. A figure is the mean step time of those steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "experts_scaling"
GIN_FILE = "gin/experiments/demo.gin"
EXPERTS = (8, 32, 128)  # the ratio the headline reads is 128 / 8; --experts 8,16,32,64,128 for the curve


class TrainStep:
    """The trainer's jitted step for one expert count, with its state kept from call to call."""

    def __init__(self, *, gin_file: str, num_experts: int, seed: int = 0, bindings=(), data: int = 1,
                 expert: int = 1):
        """bindings: more gin bindings ("MLP_DIM=768") after NUM_EXPERTS. data, expert: the mesh, on the
        first data x expert devices (default one device)."""
        import gin
        import jax
        import jax.numpy as jnp

        from benchmarks.hf_switch import make_data
        from mtmoe import command_line, partitioning, trainer

        command_line.parse_gin(gin_files=[gin_file],
                               bindings=["MODEL_DIR='/tmp/unused'", f"NUM_EXPERTS={num_experts}", *bindings])
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        optimizer = gin.query_parameter("%OPTIMIZER").scoped_configurable_fn
        learning_rate = gin.query_parameter("train.train.learning_rate").scoped_configurable_fn()
        dataset_cfg = gin.query_parameter("train.train.train_dataset_cfg").scoped_configurable_fn()
        gin.clear_config()

        self.jax, self.jnp, self.config = jax, jnp, model.config
        self.batch_size = dataset_cfg.batch_size
        self.src_len, self.tgt_len = (dataset_cfg.task_feature_lengths[k] for k in ("inputs", "targets"))
        self.mesh = partitioning.make_mesh(data=data, expert=expert, devices=jax.devices()[:data * expert])
        input_shapes = {"encoder_input_tokens": (self.batch_size, self.src_len),
                        "decoder_input_tokens": (self.batch_size, self.tgt_len)}
        tx = optimizer(learning_rate=learning_rate)
        init_rng, self.dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
        layout = trainer.state_layout(model=model, optimizer=tx, mesh=self.mesh, input_shapes=input_shapes,
                                      init_rng=init_rng)
        self.num_params = trainer.count_params(layout.abstract_params)
        self.params, self.opt_state = trainer.initialize_state(
            model=model, optimizer=tx, layout=layout, mesh=self.mesh, input_shapes=input_shapes, init_rng=init_rng,
            print_fn=lambda line: None)
        self.train_step, _ = trainer.compile_steps(model=model, optimizer=tx, learning_rate=learning_rate,
                                                   num_microbatches=1, mesh=self.mesh, layout=layout)
        data = make_data({"vocab_size": model.config.vocab_size}, batch=self.batch_size, src_len=self.src_len,
                         tgt_len=self.tgt_len, seed=seed)
        self.batch = partitioning.shard_batch(data, self.mesh)
        self.healthy, self.step = trainer.healthy_flag(self.mesh), 0

    def compilations(self) -> int | None:
        """How many times the jitted step was traced and compiled so far (None if this JAX cannot tell)."""
        cache_size = getattr(self.train_step, "_cache_size", None)
        return cache_size() if cache_size else None

    def run(self, steps: int) -> float:
        """Seconds for `steps` steps back to back, until the last one's results are ready."""
        from mtmoe import partitioning

        started = time.perf_counter()
        with partitioning.mesh_context(self.mesh):
            for _ in range(steps):
                self.params, self.opt_state, self.healthy, metrics = self.train_step(
                    self.params, self.opt_state, self.healthy, self.jnp.int32(self.step), self.batch,
                    self.dropout_rng)
                self.step += 1
        self.jax.block_until_ready((self.params, metrics))
        if not bool(self.healthy):
            raise SystemExit(f"{NAME}: {self.config.moe.num_experts} experts: a step was not finite")
        return time.perf_counter() - started


def build(gin_file: str, experts: list[int], warmup_steps: int) -> tuple[dict, dict]:
    """({experts: TrainStep}, {experts: seconds to compile and run the first step, and the warm-up steps})."""
    steps, setup = {}, {}
    for num_experts in experts:
        started = time.perf_counter()
        steps[num_experts] = step = TrainStep(gin_file=gin_file, num_experts=num_experts)
        built = time.perf_counter()
        first = step.run(1)  # compiles
        warm = [step.run(1) for _ in range(warmup_steps)]
        setup[num_experts] = {"build_s": built - started, "compile_and_first_step_s": first, "warmup_steps_s": warm,
                              "compilations": step.compilations()}
        print(f"{num_experts} experts: {step.num_params:,} parameters; built in {built - started:.1f} s, compiled "
              f"and ran the first step in {first:.1f} s, then warm-up steps of "
              + ", ".join(f"{s:.1f}" for s in warm) + " s", flush=True)
    return steps, setup


def compilation_note(setup: dict) -> str:
    """Says so when the step was compiled more than once before the timed steps: compile time a run pays on top."""
    counts = {n: s["compilations"] for n, s in setup.items() if s["compilations"] and s["compilations"] > 1}
    if not counts:
        return ""
    return (" (the jitted step was compiled " + ", ".join(f"{c}x at {n} experts" for n, c in counts.items())
            + " by then: a later step's inputs differed in type from the first's, so it was traced again)")


def measure(steps: dict, reps: int, per_rep: int) -> dict:
    """{experts: [mean seconds per step, one per repetition]}, the counts interleaved with protocol.orders."""
    seconds = {n: [] for n in steps}
    for rep, order in enumerate(protocol.orders(list(steps), reps)):
        for num_experts in order:
            seconds[num_experts].append(steps[num_experts].run(per_rep) / per_rep)
        print(f"rep {rep + 1}: " + ", ".join(f"{n if isinstance(n, str) else f'{n} experts'} {1000 * s[-1]:.0f} ms"
                                             for n, s in seconds.items()),
              flush=True)
    return seconds


def routing(config) -> str:
    """'top-1 routing' for the Switch router (a token's top-k experts), else the router's class."""
    router = config.moe.router
    k = getattr(router, "num_selected_experts", None)
    return f"top-{k} routing" if k else f"{type(router).__name__} routing"


def times(s: dict) -> str:
    """'1.42x (1.38..1.51)': a ratio's spread."""
    return f"{s['median']:.2f}x ({s['min']:.2f}..{s['max']:.2f})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default=GIN_FILE, help="the training configuration (default: %(default)s)")
    parser.add_argument("--experts", default=",".join(map(str, EXPERTS)),
                        help="comma-separated expert counts (default: %(default)s)")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps after the first (compiling) one")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per expert count and repetition")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    try:
        experts = sorted({int(n) for n in args.experts.split(",") if n})
    except ValueError:
        parser.error(f"--experts {args.experts!r}: comma-separated integers")
    if not experts or experts[0] < 1 or args.steps < 1:
        parser.error("--experts needs at least one count of 1 or more, and --steps at least 1")
    run = protocol.Run(NAME, args, argv=argv)

    from mtmoe import host_memory

    host_memory.apply_for_command_line()  # as mtmoe.train does, before JAX allocates
    steps, setup = build(args.gin_file, experts, args.warmup_steps)
    seconds = measure(steps, args.reps, args.steps)

    some = steps[experts[0]]
    tokens = some.batch_size * some.tgt_len
    base, top = experts[0], experts[-1]
    summary = {n: {"num_params": steps[n].num_params, "step_seconds": protocol.spread(seconds[n]),
                   "target_tokens_per_s": protocol.spread(tokens / s for s in seconds[n]),
                   f"step_time_over_{base}_experts": protocol.ratio_spread(seconds[n], seconds[base])}
               for n in experts}
    over = protocol.ratio_spread(seconds[top], seconds[base])
    config = some.config
    rows = [[str(n), f"{s['num_params'] / 1e6:.1f} M", protocol.fmt_spread(s["step_seconds"], "{:.0f}", scale=1000),
             protocol.fmt_spread(s["target_tokens_per_s"], "{:.0f}"),
             times(s[f"step_time_over_{base}_experts"])] for n, s in summary.items()]
    run.write(
        title=f"The whole train step from {base} to {top} experts",
        about=(f"The trainer's jitted train step (`trainer.compile_steps`: forward, backward, Adafactor update) of "
               f"`{args.gin_file}`'s model (d_model {config.d_model}, {config.num_encoder_layers}+"
               f"{config.num_decoder_layers} layers, an MoE layer at every other FFN, {routing(config)}, each expert "
               f"{config.moe.expert_d_ff or config.d_ff} wide like the dense MLP, groups of "
               f"{config.moe.max_group_size} tokens) with NUM_EXPERTS from {base} to {top}: equal expert FLOPs per "
               f"token, parameters growing with the experts. One CPU device, batch {some.batch_size} x "
               f"({some.src_len} source, {some.tgt_len} target) tokens; {args.steps} steps back to back per "
               f"repetition, compiled and warmed up ({args.warmup_steps} steps) before."),
        table={"columns": ["experts", "parameters", "ms per step", "target tokens/s",
                           f"step time over {base} experts"], "rows": rows},
        headline=(f"At {top} experts a train step takes {times(over)} as long as at {base} "
                  f"({1000 * summary[top]['step_seconds']['median']:.0f} against "
                  f"{1000 * summary[base]['step_seconds']['median']:.0f} ms) with "
                  f"{summary[top]['num_params'] / summary[base]['num_params']:.1f}x the parameters."),
        notes=[f"Synthetic batches: random token ids over the embedded vocabulary ({config.vocab_size} ids), one "
               "sentence pair per row with no padding and no packing (the demo packs several pairs per row), the "
               "same batch every step; no input pipeline runs.",
               f"Untimed, before the repetitions: the first step (compilation included), then the "
               f"{args.warmup_steps} warm-up steps, in seconds: " + "; ".join(
                   f"{n} experts {s['compile_and_first_step_s']:.1f}, "
                   + "+".join(f"{x:.1f}" for x in s["warmup_steps_s"]) for n, s in setup.items())
               + compilation_note(setup) + "."],
        results={"gin_file": args.gin_file, "experts": experts, "batch_size": some.batch_size,
                 "src_len": some.src_len, "tgt_len": some.tgt_len, "steps_per_rep": args.steps,
                 "warmup_steps": args.warmup_steps, "setup": {str(n): s for n, s in setup.items()},
                 "summary": {str(n): s for n, s in summary.items()},
                 f"step_time_{top}_over_{base}_experts": over,
                 "runs": {str(n): s for n, s in seconds.items()}},
    )


if __name__ == "__main__":
    main()
