"""Model FLOPs utilisation of the tiny mSwitch train step on this CPU.

    .venv/bin/python benchmarks/mfu.py                 # ~8 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/mfu.py --reps 5 --flag_sets default

MFU = achieved model FLOP/s of the train step / FLOP/s of a large float32
matrix product (n x n by n x n, n = --matmul_n) measured in the same run,
repetition by repetition (each repetition times the matmul, then the step, so
both see the same load from other processes on the shared cores). For each
we take the best of a few calls within the repetition, and report the median
and min..max of the per-repetition MFU.

Model FLOPs per step are counted from the shapes (`count_flops`, the formula is
in its docstring) with each token's one expert, i.e. the useful work; the
"executed" count adds the empty expert slots (capacity factor) and is checked
against XLA's own cost analysis of the compiled step (which also counts
elementwise ops, the loss and the optimizer).

The train step is the trainer's kind: jax.jit(value_and_grad(models.loss_fn) +
optax.adafactor), parameters and optimizer state donated. Variants, each
compiled once in one worker process per XLA flag set:
  as_is          mtmoe as committed (cross-entropy with a hand-written VJP)
  xent_autodiff  the cross-entropy with an autodiff gradient of take_along_axis
                 (benchmarks/patches.py), to show what the hand-written VJP saves
Flag sets: "default" and "no_ynn" (XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=,
i.e. XLA:CPU's YNNPACK dot fusions off, Eigen/XNNPACK instead).
Writes benchmarks/results/mfu.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

RESULT_PATH = os.path.join(ROOT, "benchmarks", "results", "mfu.json")
FLAG_SETS = {"default": None, "no_ynn": "--xla_cpu_experimental_ynn_fusion_type="}
VARIANTS = ("as_is", "xent_autodiff")  # in this order: the patch stays applied once installed


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


class MfuWorker:
    """Compiles the matmul and both train-step variants once; `run` times one repetition."""

    def __init__(self, opts):
        import jax
        import jax.numpy as jnp
        import optax
        import patches
        from flax import linen as nn
        from hf_switch import make_data

        from mtmoe import models, moe, routing

        self.jax, self.opts = jax, opts
        config = load_config(opts["gin_file"])
        self.config = config
        model = models.EncoderDecoderModel(config=config)
        batch, src_len, tgt_len = opts["batch"], opts["src_len"], opts["tgt_len"]
        data = make_data({"vocab_size": config.vocab_size}, batch=batch, src_len=src_len, tgt_len=tgt_len, seed=0)
        self.batch = {k: jnp.asarray(x) for k, x in data.items()}
        shapes = {"encoder_input_tokens": (2, src_len), "decoder_input_tokens": (2, tgt_len)}
        variables = jax.jit(lambda r: model.get_initial_variables(r, input_shapes=shapes))(jax.random.PRNGKey(0))
        params = nn.unbox(variables["params"])
        tx = optax.adafactor(learning_rate=1e-3, decay_rate=0.8, clipping_threshold=1.0,
                             multiply_by_parameter_scale=True, min_dim_size_to_factor=128)

        def make_step():
            def train_step(params, opt_state, batch, rng):
                (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, rng)
                updates, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, loss

            return jax.jit(train_step, donate_argnums=(0, 1))

        self.steps, self.state, self.xla_flops, self.compile_seconds = {}, {}, {}, {}
        for variant in VARIANTS:
            if variant == "xent_autodiff":
                patches.apply("xent_autodiff")
            step = make_step()
            state = (jax.tree.map(jnp.copy, params), tx.init(params))
            t0 = time.perf_counter()
            compiled = step.lower(*state, self.batch, jax.random.PRNGKey(1)).compile()
            self.compile_seconds[variant] = time.perf_counter() - t0
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            self.xla_flops[variant] = float(cost["flops"])
            self.steps[variant] = compiled
            self.state[variant] = state
        self.rng = jax.random.PRNGKey(2)

        n = opts["matmul_n"]
        self.lhs = jax.random.normal(jax.random.PRNGKey(3), (n, n), jnp.float32)
        self.rhs = jax.random.normal(jax.random.PRNGKey(4), (n, n), jnp.float32)
        self.matmul = jax.jit(lambda x, y: x @ y).lower(self.lhs, self.rhs).compile()
        jax.block_until_ready(self.matmul(self.lhs, self.rhs))
        for variant in VARIANTS:  # one untimed step each (first-run allocations)
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
        self.num_params = int(sum(x.size for x in jax.tree.leaves(params)))

    def _step(self, variant):
        self.rng, rng = self.jax.random.split(self.rng)
        params, opt_state, loss = self.steps[variant](*self.state[variant], self.batch, rng)
        self.state[variant] = (params, opt_state)
        return float(loss)  # waits for the step

    def info(self):
        return {"xla_flops": self.xla_flops, "counted_flops": self.flops, "num_params": self.num_params,
                "compile_seconds": self.compile_seconds, "jax": self.jax.__version__,
                "config": {**{k: getattr(self.config, k) for k in (
                    "vocab_size", "d_model", "num_heads", "head_dim", "d_ff", "num_encoder_layers",
                    "num_decoder_layers", "activations", "dtype")},
                    **{k: getattr(self.config.moe, k) for k in ("num_experts", "dispatch", "max_group_size")}}}

    def run(self):
        n = self.opts["matmul_n"]
        matmul_seconds = []
        for _ in range(self.opts["matmul_calls"]):
            t0 = time.perf_counter()
            self.jax.block_until_ready(self.matmul(self.lhs, self.rhs))
            matmul_seconds.append(time.perf_counter() - t0)
        out = {"matmul_flops_per_s": 2 * n**3 / min(matmul_seconds), "step_seconds": {}}
        for variant in VARIANTS:
            times = []
            for _ in range(self.opts["step_calls"]):
                t0 = time.perf_counter()
                self._step(variant)
                times.append(time.perf_counter() - t0)
            out["step_seconds"][variant] = min(times)
        return out


def worker_main():
    out = sys.stdout
    sys.stdout = sys.stderr
    worker = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                break
            if msg["cmd"] == "init":
                worker = MfuWorker(msg["opts"])
                reply = worker.info()
            else:
                reply = worker.run()
        except Exception as err:
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["mfu"], help=argparse.SUPPRESS)
    parser.add_argument("--gin_file", default="gin/models/mswitch_tiny.gin")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--src_len", type=int, default=64)
    parser.add_argument("--tgt_len", type=int, default=64)
    parser.add_argument("--matmul_n", type=int, default=2048)
    parser.add_argument("--matmul_calls", type=int, default=3)
    parser.add_argument("--step_calls", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--flag_sets", default="default,no_ynn")
    parser.add_argument("--out", default=RESULT_PATH)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return

    from hf_switch import PROJECT_PYTHON, Worker, git_state

    opts = {k: getattr(args, k) for k in ("gin_file", "batch", "src_len", "tgt_len", "matmul_n", "matmul_calls",
                                          "step_calls")}
    flag_sets = [f for f in args.flag_sets.split(",") if f]
    workers, info = {}, {}
    for name in flag_sets:
        if name not in FLAG_SETS:
            raise SystemExit(f"unknown flag set {name!r}; use some of {','.join(FLAG_SETS)}")
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        if FLAG_SETS[name]:
            env["XLA_FLAGS"] = FLAG_SETS[name]
        workers[name] = Worker(name, PROJECT_PYTHON, "mfu", env=env, script=os.path.abspath(__file__))
    runs = {name: [] for name in flag_sets}
    try:
        for name, worker in workers.items():
            info[name] = worker.call(cmd="init", opts=opts)
            print(f"{name}: compiled in {info[name]['compile_seconds']}", flush=True)
        for rep in range(args.reps):
            for name in (flag_sets if rep % 2 == 0 else flag_sets[::-1]):
                reply = workers[name].call(cmd="run")
                runs[name].append(reply)
                print(f"rep {rep} {name:8s} matmul {reply['matmul_flops_per_s'] / 1e9:6.1f} GFLOP/s  step "
                      + "  ".join(f"{v} {s:.2f}s" for v, s in reply["step_seconds"].items()), flush=True)
    finally:
        for worker in workers.values():
            worker.close()

    first = info[flag_sets[0]]
    flops = first["counted_flops"]
    print()
    print(f"model: {json.dumps(first['config'])}, {first['num_params']:,} parameters, "
          f"batch {args.batch} x ({args.src_len} source, {args.tgt_len} target) tokens")
    print(f"FLOPs per train step: model (one expert per token) {flops['model_train'] / 1e9:.2f} G, "
          f"executed (with empty capacity slots) {flops['executed_train'] / 1e9:.2f} G, "
          f"XLA cost analysis {first['xla_flops']['as_is'] / 1e9:.2f} G (as_is), "
          f"{first['xla_flops']['xent_autodiff'] / 1e9:.2f} G (xent_autodiff)")
    summary = {}
    print(f"\n{'flags':8s} {'variant':13s} {'step s':>7s} {'tok/s':>8s} {'GFLOP/s':>8s} {'matmul GFLOP/s':>15s} "
          f"{'MFU median':>10s} {'min..max':>13s}")
    for name in flag_sets:
        summary[name] = {}
        for variant in VARIANTS:
            mfu = [flops["model_train"] / r["step_seconds"][variant] / r["matmul_flops_per_s"] for r in runs[name]]
            step = [r["step_seconds"][variant] for r in runs[name]]
            peak = [r["matmul_flops_per_s"] for r in runs[name]]
            summary[name][variant] = {
                "mfu": spread(mfu), "step_seconds": spread(step), "matmul_flops_per_s": spread(peak),
                "target_tokens_per_s": args.batch * args.tgt_len / statistics.median(step),
                "model_flops_per_s": flops["model_train"] / statistics.median(step),
            }
            s = summary[name][variant]
            print(f"{name:8s} {variant:13s} {s['step_seconds']['median']:7.2f} {s['target_tokens_per_s']:8.0f} "
                  f"{s['model_flops_per_s'] / 1e9:8.1f} {statistics.median(peak) / 1e9:15.1f} "
                  f"{100 * s['mfu']['median']:9.1f}% {100 * s['mfu']['min']:5.1f}..{100 * s['mfu']['max']:.1f}%")
    result = {
        "benchmark": "mfu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "note": "2 CPU cores shared with other processes; matmul and steps interleaved per repetition"},
        "command": "python benchmarks/mfu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": git_state(), "options": opts, "flag_sets": {n: FLAG_SETS[n] for n in flag_sets}, "workers": info, "summary": summary,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
