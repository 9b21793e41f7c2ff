"""Model FLOPs utilisation of the tiny mSwitch train step on this CPU, against a matmul and against the peak.

    .venv/bin/python benchmarks/mfu.py                                   # 5 repetitions, ~2 minutes
    .venv/bin/python benchmarks/mfu.py --variants as_is --flag_sets default --reps 7   # the headline alone, ~1 minute

The train step is mtmoe.train's (trainer.compile_steps: forward, backward,
optax.adafactor, the finite-or-keep guard; parameters and optimizer state
donated) on its default mesh, one CPU device per core with the batch split
between them (mtmoe/cpu_devices.py), on the model of
`--gin_file` (default the tiny mSwitch: d_model 256, 2+2 layers, 8 experts at
every other FFN) with a batch of 32 x (64 source, 64 target) random tokens, in a process
holding the trainer's host memory policy (mtmoe/host_memory.py: without it
each step page-faults its ~750 MiB of freshly mapped buffers back in).
Its MFU is the model FLOPs it does per second over two references:

- a 2048 x 2048 x 2048 float32 matrix product timed in the same repetition
  (interleaved with the steps in an order that changes per repetition, so both
  see the same host): what XLA:CPU achieves on its best case here;
- the CPU's float32 peak from its arithmetic: cores x clock x FLOPs per cycle
  (two FMA units per core: 256 bits wide, 2 x 8 lanes x 2 = 32 float32 FLOPs
  per cycle and core; 512 bits wide, 2 x 16 x 2 = 64), the clock read from
  /proc/cpuinfo ("cpu MHz") and the units' width from its flags and CPU
  family (`fma_width`: AMD's Zen 4 decodes AVX-512 but runs it on 256-bit units).

Model FLOPs per step are counted from the shapes (`count_flops`, the formula is
in its docstring) with each token's one expert, i.e. the useful work; the
"executed" count adds the empty expert slots (capacity factor); both are
reported beside XLA's own cost analysis of the compiled step (which also counts
elementwise ops, the loss and the optimizer).

Beside the committed step (`as_is`, the headline) the default run also times
the cross-entropy with an autodiff gradient of take_along_axis
(`xent_autodiff`, benchmarks/patches.py: what the hand-written VJP saves), and
both again under XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (`no_ynn`:
XLA:CPU's YNNPACK dot fusions off); `--variants` and `--flag_sets` choose.
Each flag set is one worker process that compiles everything once; the driver
interleaves every (flag set, matmul or variant) per repetition. Within a
repetition a figure is the best of a few back-to-back calls (`--matmul_calls`,
`--step_calls`), so a first call after another program's does not count its
cache misses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "mfu"
FLAG_SETS = {"default": None, "no_ynn": "--xla_cpu_experimental_ynn_fusion_type="}
FLAG_SET_LABELS = {"default": "XLA:CPU defaults", "no_ynn": "YNNPACK dot fusions off"}
VARIANTS = ("as_is", "xent_autodiff")  # compiled in this order: the patch stays applied once installed
VARIANT_LABELS = {"as_is": "train step", "xent_autodiff": "train step, autodiff cross-entropy gradient"}
MATMUL = "matmul"
# float32 FLOPs per cycle and core with two FMA units: units x lanes x 2 (multiply and add). 256-bit units
# hold 8 lanes, 512-bit units 16. A CPU's flags say which instructions it decodes, not how wide its units are:
# AMD's Zen 4 (family 25, the only one of that family with AVX-512) runs a 512-bit FMA as two 256-bit halves,
# so its peak is the 256-bit one; Intel's AVX-512 cores and AMD from Zen 5 (family 26) have 512-bit units
# (a Xeon with one 512-bit unit reaches half of it, which the matmul row then shows).
FLOPS_PER_CYCLE = {256: 32, 512: 64}


def fma_width(flags: set[str], vendor: str, family: int) -> int:
    """Bits of the core's FMA datapath: 512 where the CPU reports AVX-512 and runs it at full width, else 256."""
    if "avx512f" not in flags or (vendor == "AuthenticAMD" and family < 26):
        return 256
    return 512


def count_flops(config, *, batch: int, src_len: int, tgt_len: int, capacity_per_group=None, groups=None) -> dict:
    """Matmul FLOPs of one forward pass, from the shapes; training = 3 x forward.

    N_s = batch * src_len, N_t = batch * tgt_len tokens; A = heads * head_dim;
    a matmul [m, k] x [k, n] costs 2 m k n. Per layer:
      encoder  8 D A N_s (q, k, v, o) + 4 S A N_s (scores and weighted sum)
               + FFN(N_s)
      decoder  8 D A N_t + 4 T A N_t (self-attention)
               + 4 D A N_t (cross q, o) + 4 D A N_s (cross k, v) + 4 S A N_t
               + FFN(N_t)
      FFN(N)   dense: 2 D F (n_in + 1) N, n_in = 2 for gated GELU (wi_0, wi_1), 1 for ReLU
               MoE: 2 D E N (router) + 2 D F (n_in + 1) x (N model: one expert per token;
               G E C executed: every slot of the fixed-shape expert buffers)
    plus logits 2 D V N_t. Attention counts the full T x T (causal half included:
    it is computed). Backward = 2 x forward (input and weight gradients).
    Returns {"model_forward", "model_train", "executed_forward", "executed_train"}.
    """
    d, a, v = config.d_model, config.num_heads * config.head_dim, config.vocab_size
    n_s, n_t = batch * src_len, batch * tgt_len

    def ffn(layer, tokens, *, decoder, executed):
        d_ff = config.d_ff
        acts = config.activations
        if not config.is_sparse(layer, decoder=decoder):
            return 2 * d * d_ff * (len(acts) + 1) * tokens
        d_ff = config.moe.expert_d_ff or config.d_ff
        acts = config.moe.expert_activations or config.activations
        rows = tokens
        if executed:
            seq = tgt_len if decoder else src_len
            g = groups(batch * seq) if groups else 1
            rows = g * config.moe.num_experts * capacity_per_group(batch * seq // g)
        return 2 * d * config.moe.num_experts * tokens + 2 * d * d_ff * (len(acts) + 1) * rows

    out = {}
    for executed in (False, True):
        total = 2 * d * v * n_t
        for i in range(config.num_encoder_layers):
            total += 8 * d * a * n_s + 4 * src_len * a * n_s + ffn(i, n_s, decoder=False, executed=executed)
        for i in range(config.num_decoder_layers):
            total += 8 * d * a * n_t + 4 * tgt_len * a * n_t
            total += 4 * d * a * n_t + 4 * d * a * n_s + 4 * src_len * a * n_t
            total += ffn(i, n_t, decoder=True, executed=executed)
        key = "executed" if executed else "model"
        out[f"{key}_forward"] = total
        out[f"{key}_train"] = 3 * total
    return out


def load_config(gin_file: str):
    """The TransformerConfig that `gin_file` binds (as mtmoe.train builds it)."""
    import gin

    from mtmoe import network

    gin.add_config_file_search_path(ROOT)
    gin.parse_config_file(os.path.join(ROOT, gin_file))
    config = gin.get_configurable(network.TransformerConfig)()
    gin.clear_config()
    return config


def above_peak_note(matmul_flops_per_s: float, peak: dict) -> str:
    """A sentence when the matmul beats the peak at the reported clock: the cores then run faster than it."""
    if matmul_flops_per_s <= peak["flops_per_s"]:
        return ""
    ghz = matmul_flops_per_s / (peak["cores"] * peak["flops_per_cycle"] * 1e9)
    return (f" The matmul exceeds this peak, so the cores ran at {ghz:.2f} GHz or more (a boost clock the OS does "
            "not report): against the peak at that clock every figure would be lower.")


def cpu_peak(cores: int | None = None, cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The float32 peak from the arithmetic: cores x clock ("cpu MHz" of /proc/cpuinfo, their mean) x
    FLOPS_PER_CYCLE of the core's FMA datapath (fma_width)."""
    cores = cores or os.cpu_count()
    clocks, flags, fields = [], set(), {}
    with open(cpuinfo) as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "cpu MHz":
                clocks.append(float(value))
            elif key == "flags" and not flags:
                flags = set(value.split())
            elif key in ("vendor_id", "cpu family") and key not in fields:
                fields[key] = value.strip()
    if not clocks:
        raise SystemExit(f"{NAME}: /proc/cpuinfo gives no \"cpu MHz\"; the arithmetic peak cannot be computed")
    ghz = sum(clocks) / len(clocks) / 1000
    vendor, family = fields.get("vendor_id", "?"), int(fields.get("cpu family", "0") or 0)
    width = fma_width(flags, vendor, family)
    return {"cores": cores, "ghz": ghz, "vendor": vendor, "family": family, "fma_bits": width,
            "flops_per_cycle": FLOPS_PER_CYCLE[width], "flops_per_s": cores * ghz * 1e9 * FLOPS_PER_CYCLE[width],
            "avx2_fma": {"avx2", "fma"} <= flags, "avx512f": "avx512f" in flags}


# ---------------------------------------------------------------------------
# The worker: one process per XLA flag set


class MfuWorker:
    """Compiles the matmul and the train-step variants once; `time` times one of them."""

    def __init__(self, opts):
        from mtmoe import host_memory

        host_memory.retain_freed_memory()  # the trainer's host memory policy (mtmoe.train), before JAX allocates
        import jax
        import jax.numpy as jnp
        import optax

        from benchmarks import patches
        from benchmarks.hf_switch import make_data
        from mtmoe import models, moe, partitioning, routing, trainer

        self.jax, self.opts = jax, opts
        config = load_config(opts["gin_file"])
        self.config = config
        model = models.EncoderDecoderModel(config=config)
        batch, src_len, tgt_len = opts["batch"], opts["src_len"], opts["tgt_len"]
        # mtmoe.train's default mesh: every device of the process, one per core (worker_main splits the cores).
        self.mesh = mesh = partitioning.make_mesh()
        data = make_data({"vocab_size": config.vocab_size}, batch=batch, src_len=src_len, tgt_len=tgt_len, seed=0)
        self.batch = partitioning.shard_batch(data, mesh)
        shapes = {"encoder_input_tokens": (batch, src_len), "decoder_input_tokens": (batch, tgt_len)}
        tx = optax.adafactor(learning_rate=1e-3, decay_rate=0.8, clipping_threshold=1.0,
                             multiply_by_parameter_scale=True, min_dim_size_to_factor=128)
        init_rng, self.dropout_rng = jax.random.split(jax.random.PRNGKey(0))
        layout = trainer.state_layout(model=model, optimizer=tx, mesh=mesh, input_shapes=shapes, init_rng=init_rng)

        self.steps, self.state, self.xla_flops, self.compile_seconds = {}, {}, {}, {}
        for variant in (v for v in VARIANTS if v in opts["variants"]):
            if variant == "xent_autodiff":
                patches.apply("xent_autodiff")
            step, _ = trainer.compile_steps(model=model, optimizer=tx, learning_rate=lambda step: 1e-3,
                                            num_microbatches=1, mesh=mesh, layout=layout)
            params, opt_state = trainer.initialize_state(model=model, optimizer=tx, layout=layout, mesh=mesh,
                                                         input_shapes=shapes, init_rng=init_rng,
                                                         print_fn=lambda line: None)
            state = (params, opt_state, trainer.healthy_flag(mesh))
            t0 = time.perf_counter()
            with partitioning.mesh_context(mesh):
                compiled = step.lower(*state, jnp.int32(0), self.batch, self.dropout_rng).compile()
            self.compile_seconds[variant] = time.perf_counter() - t0
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            self.xla_flops[variant] = float(cost["flops"]) * mesh.size  # XLA counts one device's share
            self.steps[variant] = compiled
            self.state[variant] = state
        self.step_number = 0

        n = opts["matmul_n"]
        self.lhs = jax.random.normal(jax.random.PRNGKey(3), (n, n), jnp.float32)
        self.rhs = jax.random.normal(jax.random.PRNGKey(4), (n, n), jnp.float32)
        self.matmul = jax.jit(lambda x, y: x @ y).lower(self.lhs, self.rhs).compile()
        jax.block_until_ready(self.matmul(self.lhs, self.rhs))
        for variant in self.steps:  # one untimed step each (first-run allocations)
            self._step(variant)

        def groups(num_tokens):
            return moe.num_groups(num_tokens=num_tokens, max_group_size=config.moe.max_group_size)

        def capacity(tokens_per_group):
            return routing.expert_capacity(
                tokens_per_group=tokens_per_group, num_experts=config.moe.num_experts,
                capacity_factor=config.moe.train_capacity_factor, min_expert_capacity=config.moe.min_expert_capacity)

        self.flops = count_flops(config, batch=batch, src_len=src_len, tgt_len=tgt_len,
                                 capacity_per_group=capacity if config.moe.num_experts else None,
                                 groups=groups if config.moe.num_experts else None)
        self.num_params = trainer.count_params(layout.abstract_params)

    def _step(self, variant):
        params, opt_state, healthy, metrics = self.steps[variant](
            *self.state[variant], self.jax.numpy.int32(self.step_number), self.batch, self.dropout_rng)
        self.state[variant] = (params, opt_state, healthy)
        self.step_number += 1
        return float(metrics["loss"])  # waits for the step

    def info(self):
        return {"xla_flops": self.xla_flops, "counted_flops": self.flops, "num_params": self.num_params,
                "compile_seconds": self.compile_seconds, "jax": self.jax.__version__,
                "config": {**{k: getattr(self.config, k) for k in (
                    "vocab_size", "d_model", "num_heads", "head_dim", "d_ff", "num_encoder_layers",
                    "num_decoder_layers", "activations", "dtype")},
                    **{k: getattr(self.config.moe, k) for k in ("num_experts", "dispatch", "max_group_size")}}}

    def time(self, what: str) -> dict:
        """Seconds of the matmul or of one step of variant `what`: the best of a few back-to-back calls."""
        if what == MATMUL:
            def call():
                self.jax.block_until_ready(self.matmul(self.lhs, self.rhs))
            calls = self.opts["matmul_calls"]
        else:
            def call():
                self._step(what)
            calls = self.opts["step_calls"]
        seconds = []
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - t0)
        return {"seconds": min(seconds), "calls": seconds}


def worker_main():
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the replies
    worker = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                break
            if msg["cmd"] == "init":
                from mtmoe import cpu_devices

                cpu_devices.split_cores()  # as mtmoe.train does, before JAX starts
                worker = MfuWorker(msg["opts"])
                reply = worker.info()
            else:
                reply = worker.time(msg["what"])
        except Exception as err:  # reported to the driver, which stops with the message
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------
# The driver


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["mfu"], help=argparse.SUPPRESS)
    parser.add_argument("--gin_file", default="gin/models/mswitch_tiny.gin")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--src_len", type=int, default=64)
    parser.add_argument("--tgt_len", type=int, default=64)
    parser.add_argument("--matmul_n", type=int, default=2048)
    parser.add_argument("--matmul_calls", type=int, default=3, help="matmul calls per repetition; the best counts")
    parser.add_argument("--step_calls", type=int, default=2, help="steps per variant and repetition; the best counts")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, out of {','.join(VARIANTS)}")
    parser.add_argument("--flag_sets", default=",".join(FLAG_SETS), help=f"comma-separated, out of {','.join(FLAG_SETS)}")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return
    asked_variants, asked_flags = args.variants.split(","), args.flag_sets.split(",")
    variants = [v for v in VARIANTS if v in asked_variants]  # in this order: the first is the headline's
    flag_sets = [f for f in FLAG_SETS if f in asked_flags]
    unknown = [x for x in asked_variants if x not in VARIANTS] + [x for x in asked_flags if x not in FLAG_SETS]
    if unknown or not variants or not flag_sets:
        parser.error(f"--variants out of {','.join(VARIANTS)} and --flag_sets out of {','.join(FLAG_SETS)}, "
                     f"at least one each (unknown: {', '.join(unknown) or 'none'})")
    run = protocol.Run(NAME, args, argv=argv)
    peak = cpu_peak()

    from benchmarks.hf_switch import Worker

    opts = {k: getattr(args, k) for k in ("gin_file", "batch", "src_len", "tgt_len", "matmul_n", "matmul_calls",
                                          "step_calls")}
    opts["variants"] = variants
    workers, info = {}, {}
    items = [(flags, what) for flags in flag_sets for what in (MATMUL, *variants)]
    runs = {item: [] for item in items}
    try:
        for name in flag_sets:
            env = dict(os.environ)
            env.pop("XLA_FLAGS", None)
            if FLAG_SETS[name]:
                env["XLA_FLAGS"] = FLAG_SETS[name]
            workers[name] = Worker(name, sys.executable, "mfu", env=env, script=os.path.abspath(__file__))
        for name, worker in workers.items():
            info[name] = worker.call(cmd="init", opts=opts)
            print(f"{name}: compiled in {json.dumps(info[name]['compile_seconds'])}", flush=True)
        for rep, order in enumerate(protocol.orders(items, args.reps)):
            for flags, what in order:
                runs[(flags, what)].append(workers[flags].call(cmd="time", what=what)["seconds"])
            print(f"rep {rep + 1}: " + ", ".join(f"{flags} {what} {runs[(flags, what)][-1]:.3f} s"
                                                 for flags, what in items), flush=True)
    finally:
        for worker in workers.values():
            worker.close()

    first = info[flag_sets[0]]
    flops = first["counted_flops"]
    model_train = flops["model_train"]
    matmul_flops = 2 * args.matmul_n**3
    summary = {}
    for flags in flag_sets:
        matmul_seconds = runs[(flags, MATMUL)]
        matmul_rate = [matmul_flops / s for s in matmul_seconds]
        summary[flags] = {MATMUL: {"seconds": protocol.spread(matmul_seconds),
                                   "flops_per_s": protocol.spread(matmul_rate),
                                   "of_peak": protocol.spread(r / peak["flops_per_s"] for r in matmul_rate)}}
        for variant in variants:
            rate = [model_train / s for s in runs[(flags, variant)]]
            summary[flags][variant] = {
                "seconds": protocol.spread(runs[(flags, variant)]),
                "model_flops_per_s": protocol.spread(rate),
                "target_tokens_per_s": protocol.spread(args.batch * args.tgt_len / s for s in runs[(flags, variant)]),
                "mfu_vs_matmul": protocol.ratio_spread(rate, matmul_rate),
                "mfu_vs_peak": protocol.spread(r / peak["flops_per_s"] for r in rate),
            }

    def gflops(s):
        return protocol.fmt_spread(s, "{:.1f}", scale=1e-9)

    def percent(s):
        return protocol.fmt_spread(s, "{:.1f}", scale=100)

    n = args.matmul_n
    rows = []
    for flags in flag_sets:
        m = summary[flags][MATMUL]
        rows.append([FLAG_SET_LABELS[flags], f"{n}x{n}x{n} float32 matmul", protocol.fmt_spread(m["seconds"], "{:.3g}"),
                     gflops(m["flops_per_s"]), "100", percent(m["of_peak"])])
        for variant in variants:
            s = summary[flags][variant]
            rows.append([FLAG_SET_LABELS[flags], VARIANT_LABELS[variant], protocol.fmt_spread(s["seconds"], "{:.3g}"),
                         gflops(s["model_flops_per_s"]), percent(s["mfu_vs_matmul"]), percent(s["mfu_vs_peak"])])
    head_flags, head_variant = flag_sets[0], variants[0]
    head = summary[head_flags][head_variant]
    config = first["config"]
    model = (f"`{args.gin_file}` (d_model {config['d_model']}, {config['num_encoder_layers']}+"
             f"{config['num_decoder_layers']} layers, {config['num_experts']} experts, {first['num_params']:,} "
             f"parameters)")
    matmul_flops = summary[head_flags][MATMUL]["flops_per_s"]["median"]
    notes = [
        f"Peak: {peak['cores']} cores x {peak['ghz']:.3f} GHz x {peak['flops_per_cycle']} float32 FLOPs per cycle = "
        f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s. The clock is /proc/cpuinfo's \"cpu MHz\" "
        f"({1000 * peak['ghz']:.0f} MHz), what the OS reports (a virtual machine reports the nominal clock; "
        f"a boost clock raises the real peak); the cores are the logical CPUs the OS counts; "
        f"{peak['flops_per_cycle']} FLOPs per cycle is two {peak['fma_bits']}-bit FMA units "
        f"(2 x {peak['fma_bits'] // 32} lanes x multiply and add)"
        + (" (this CPU reports AVX-512 and runs it on 256-bit units: "
           f"{peak['vendor']} family {peak['family']})" if peak["avx512f"] and peak["fma_bits"] == 256 else "") + "."
        + ("" if peak["avx2_fma"] else " This CPU does not report AVX2 and FMA, so the peak overstates it.")
        + above_peak_note(matmul_flops, peak),
        f"FLOPs per train step: {model_train / 1e9:.2f} G model (one expert per token; MFU counts these), "
        f"{flops['executed_train'] / 1e9:.2f} G executed (with the empty capacity slots); XLA's cost analysis of "
        "the compiled step: " + ", ".join(f"{v} {f / 1e9:.2f} G" for v, f in first["xla_flops"].items())
        + " (it also counts elementwise ops, the loss and the optimizer).",
        f"Each figure is the best of {args.matmul_calls} matmul calls or {args.step_calls} steps within a "
        "repetition; MFU against the matmul is taken per repetition (step and matmul of the same repetition).",
    ]
    run.write(
        title="Model FLOPs utilisation of the train step",
        about=(f"The trainer's jitted train step (value_and_grad of the loss + Adafactor, donated state) of {model} on "
               f"a batch of {args.batch} x ({args.src_len} source, {args.tgt_len} target) tokens, on CPU in float32. "
               f"Model FLOPs per second ({model_train / 1e9:.1f} G per step, counted from the shapes) over a "
               f"{n}x{n}x{n} float32 matmul timed in the same repetitions, and over the CPU's float32 peak from "
               f"its arithmetic ({peak['flops_per_s'] / 1e9:.0f} GFLOP/s)."),
        table={"columns": ["XLA flags", "measured", "seconds", "GFLOP/s", "% of the matmul", "% of the peak"],
               "rows": rows},
        headline=(f"The train step does {head['model_flops_per_s']['median'] / 1e9:.1f} GFLOP/s of model FLOPs: "
                  f"MFU {100 * head['mfu_vs_matmul']['median']:.1f}% of the {n}^3 float32 matmul "
                  f"({matmul_flops / 1e9:.1f} GFLOP/s) and "
                  f"{100 * head['mfu_vs_peak']['median']:.1f}% of the CPU's float32 peak "
                  f"({peak['flops_per_s'] / 1e9:.0f} GFLOP/s"
                  + (f" at the reported {peak['ghz']:.2f} GHz, which the matmul exceeds: the cores ran faster, so "
                     "this share overstates the step" if matmul_flops > peak["flops_per_s"] else "") + ")."),
        notes=notes,
        results={"options": dict(opts), "flag_sets": {f: FLAG_SETS[f] for f in flag_sets},
                 "peak": peak, "workers": info, "summary": summary,
                 "runs": {f"{flags}/{what}": values for (flags, what), values in runs.items()}},
    )


if __name__ == "__main__":
    main()
