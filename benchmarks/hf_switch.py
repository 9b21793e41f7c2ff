"""mtmoe against Hugging Face `SwitchTransformersForConditionalGeneration`, side by side.

    .venv/bin/python benchmarks/hf_switch.py                 # ~10 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/hf_switch.py --reps 5 --tasks train,beam32

Needs the peer venv (its own, never the project's dependencies):
    bash benchmarks/peers/setup.sh        # -> benchmarks/.venv-peers with torch (CPU) + transformers

One architecture, built in both frameworks from the macros of
gin/models/mswitch_tiny.gin (vocabulary, d_model, heads, head_dim, layers,
experts, every-other-layer MoE, capacity factor 1.25):

- HF's Switch MLP is T5's original Dense-ReLU-Dense (wi, wo), not gated. So the
  *identical* architecture is mtmoe with activations ("relu",) and the same d_ff
  ("mtmoe-relu" below, d_ff = 1.5 x the tiny model's gated d_ff, so that
  2 * D * 1.5F = 3 * D * F); the tiny model itself ("mtmoe", gated GELU, d_ff F)
  has the same parameter count and the same FLOPs per token, and is what users run.
  "mtmoe-relu+xent_autodiff" is mtmoe-relu with an autodiff-gradient
  cross-entropy (benchmarks/patches.py), to show what the committed
  hand-written gradient gains.
- Capacity: HF fixes `expert_capacity` tokens per expert per *sequence* (its
  router's cumulative sum runs over the sequence axis). mtmoe routes over groups
  of `max_group_size` tokens; we set max_group_size to the sequence length so
  that both drop the same way, and HF's expert_capacity to mtmoe's
  `routing.expert_capacity(tokens_per_group=L, capacity_factor=1.25)`.
  HF computes only the kept tokens (a Python loop over experts with boolean
  indexing); mtmoe computes every slot of the fixed-shape expert buffers
  (1.25 x the tokens at capacity factor 1.25) -- mtmoe does the *more* work.
- Untied output projection in both (T5 v1.1); parameter counts are printed and must match.

Measured (random init, random token ids, no padding):
  train     target tokens/s of one optimizer step (forward + backward + Adafactor):
            mtmoe: jax.jit(value_and_grad(loss_fn) + optax.adafactor), donated buffers;
            HF: model(**batch, labels, output_router_logits=True).loss.backward() +
            torch.optim.Adafactor(foreach=True) (the fastest Adafactor PyTorch ships).
  beamB / greedyB  sentences/s translating a batch of B sources with 4 beams /
            greedily, every output exactly `--gen` tokens long (mtmoe: an EOS id
            that never occurs; HF: min_new_tokens = max_new_tokens).
  memory    peak resident set size (VmHWM) of the worker process while it runs the
            task, reset before each task through /proc/self/clear_refs; the
            resident size before the task (framework + weights) is given too.

Each framework runs in its own long-lived worker process (compiled once); the
driver sends one task at a time, to one worker at a time, alternating, so that
load from other processes on the shared cores hits both alike. Each
repetition times each (variant, task) once; we report the median, min..max
and the ratio of medians, and write benchmarks/results/hf_switch.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
PEER_PYTHON = os.path.join(ROOT, "benchmarks", ".venv-peers", "bin", "python")
PROJECT_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
RESULT_PATH = os.path.join(ROOT, "benchmarks", "results", "hf_switch.json")
TASKS = ("train", "beam1", "beam32", "greedy1", "greedy32")
NEVER_EMITTED_EOS = -1  # an id no softmax row can produce: forces every output to full length


def git_state() -> dict:
    """The commit measured and which library files differed from it (others edit the tree too)."""
    def git(*args):
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return out.stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "mtmoe", "gin", "tasks").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_library_files": dirty}


# ---------------------------------------------------------------------------
# Memory: peak RSS of this process since the last reset
# ---------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ---------------------------------------------------------------------------
# Architecture from the project's gin file
# ---------------------------------------------------------------------------


def read_architecture(gin_file: str) -> dict:
    """The tiny model's architecture macros, read with gin from `gin_file`."""
    sys.path.insert(0, ROOT)
    import gin

    gin.add_config_file_search_path(ROOT)
    gin.parse_config_file(os.path.join(ROOT, gin_file))

    def macro(name):
        value = gin.query_parameter(f"%{name}")
        while isinstance(value, gin.config.ConfigurableReference):  # a macro bound to another macro
            value = gin.query_parameter("%" + value.scoped_selector.split("/")[0].split(" ")[-1])
        return value

    if macro("ENCODER_SPARSE_EVERY") != 2 or macro("DECODER_SPARSE_EVERY") != 2:
        raise ValueError("this benchmark maps mtmoe's every-2nd-layer MoE onto HF's num_sparse_*_layers; keep sparse_every=2")
    arch = {
        "gin_file": gin_file,
        "vocab_size": macro("VOCAB_SIZE"),
        "d_model": macro("EMBED_DIM"),
        "num_heads": macro("NUM_HEADS"),
        "head_dim": macro("HEAD_DIM"),
        "d_ff_gated": macro("MLP_DIM"),
        "num_encoder_layers": macro("NUM_ENCODER_LAYERS"),
        "num_decoder_layers": macro("NUM_DECODER_LAYERS"),
        "num_experts": macro("NUM_EXPERTS"),
        "sparse_every": 2,
        "capacity_factor": macro("TRAIN_CAPACITY_FACTOR"),
        "min_expert_capacity": macro("MIN_EXPERT_CAPACITY"),
    }
    if arch["d_ff_gated"] % 2:
        raise ValueError("MLP_DIM must be even so that the ReLU twin has d_ff = 1.5 x MLP_DIM")
    arch["d_ff_relu"] = arch["d_ff_gated"] * 3 // 2  # 2 * D * 1.5F = 3 * D * F parameters and FLOPs
    gin.clear_config()
    return arch


# ---------------------------------------------------------------------------
# Workers: one process per framework, reading JSON commands on stdin
# ---------------------------------------------------------------------------


def random_tokens(rng, shape, vocab_size):
    # Ids 2.. (0 = pad, 1 = EOS): every position is a real token.
    return rng.integers(2, vocab_size, size=shape).astype("int32")


def make_data(arch, *, batch, src_len, tgt_len, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    targets = random_tokens(rng, (batch, tgt_len), arch["vocab_size"])
    return {
        "encoder_input_tokens": random_tokens(rng, (batch, src_len), arch["vocab_size"]),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), "int32"), targets[:, :-1]], axis=1),
        "decoder_loss_weights": np.ones((batch, tgt_len), "float32"),
    }


class MtmoeWorker:
    def __init__(self, arch, opts):
        sys.path.insert(0, ROOT)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import jax
        import jax.numpy as jnp
        import optax
        from flax import linen as nn

        from mtmoe import models, network, routing
        from mtmoe.moe_config import MoeConfig

        self.jax, self.jnp = jax, jnp
        self.opts = opts
        relu = opts["variant"].startswith("mtmoe-relu")
        if opts["variant"].endswith("+xent_autodiff"):
            import patches  # benchmarks/patches.py: the autodiff-gradient cross-entropy, monkeypatched in

            patches.apply("xent_autodiff")
        group = opts["tgt_len"]
        if opts["src_len"] != group:
            raise ValueError("use --src_len == --tgt_len so that one routing group is one sequence in both stacks")
        self.config = network.TransformerConfig(
            vocab_size=arch["vocab_size"], d_model=arch["d_model"], num_heads=arch["num_heads"],
            head_dim=arch["head_dim"], d_ff=arch["d_ff_relu"] if relu else arch["d_ff_gated"],
            num_encoder_layers=arch["num_encoder_layers"], num_decoder_layers=arch["num_decoder_layers"],
            activations=("relu",) if relu else ("gelu", "linear"), dtype="float32",
            moe=MoeConfig(
                num_experts=arch["num_experts"], encoder_sparse_every=2, decoder_sparse_every=2,
                train_capacity_factor=arch["capacity_factor"], eval_capacity_factor=arch["capacity_factor"],
                min_expert_capacity=arch["min_expert_capacity"], max_group_size=group, dispatch=opts["dispatch"],
            ),
        )
        self.capacity = routing.expert_capacity(
            tokens_per_group=group, num_experts=arch["num_experts"], capacity_factor=arch["capacity_factor"],
            min_expert_capacity=arch["min_expert_capacity"],
        )
        models.EOS_ID = NEVER_EMITTED_EOS  # predict_batch reads it at trace time: full-length outputs
        self.model = models.EncoderDecoderModel(config=self.config)
        shapes = {"encoder_input_tokens": (2, opts["src_len"]), "decoder_input_tokens": (2, opts["tgt_len"])}
        variables = jax.jit(lambda r: self.model.get_initial_variables(r, input_shapes=shapes))(jax.random.PRNGKey(0))
        self.params = nn.unbox(variables["params"])
        self.num_params = int(sum(x.size for x in jax.tree.leaves(self.params)))
        # T5X's Adafactor settings (mtmoe/optimizers.py binds the same ones).
        tx = optax.adafactor(learning_rate=1e-3, decay_rate=0.8, clipping_threshold=1.0,
                             multiply_by_parameter_scale=True, min_dim_size_to_factor=128)
        self.opt_state = tx.init(self.params)
        model = self.model

        def train_step(params, opt_state, batch, rng):
            (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, rng)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        self.decoders = {}
        self.step_rng = jax.random.PRNGKey(1)

    def info(self):
        return {"num_params": self.num_params, "expert_capacity_per_sequence": self.capacity,
                "framework": f"jax {self.jax.__version__}", "threads": "XLA CPU default"}

    def _decoder(self, method):
        if method not in self.decoders:
            fn = lambda p, b: self.model.predict_batch(  # noqa: E731
                p, b, decoding=method, beam_size=4, max_decode_length=self.opts["gen"])
            self.decoders[method] = self.jax.jit(fn)
        return self.decoders[method]

    def prepare(self, task):
        """Builds the task's inputs and compiles and runs it once (not timed)."""
        jnp = self.jnp
        if task == "train":
            data = make_data(self.arch_for_data, batch=self.opts["batch"],
                             src_len=self.opts["src_len"], tgt_len=self.opts["tgt_len"], seed=0)
            self.train_batch = {k: jnp.asarray(v) for k, v in data.items()}
            return self.run("train", steps=1)
        else:
            method, batch = ("beam", int(task[4:])) if task.startswith("beam") else ("greedy", int(task[6:]))
            data = make_data(self.arch_for_data, batch=batch, src_len=self.opts["src_len"], tgt_len=1, seed=1)
            self.decode_inputs = getattr(self, "decode_inputs", {})
            self.decode_inputs[task] = ({"encoder_input_tokens": jnp.asarray(data["encoder_input_tokens"])}, method)
            return self.run(task)

    def run(self, task, steps=None):
        jax = self.jax
        if task == "train":
            steps = steps or self.opts["train_steps"]
            start = time.perf_counter()
            for _ in range(steps):
                self.step_rng, rng = jax.random.split(self.step_rng)
                self.params, self.opt_state, loss = self.train_step(self.params, self.opt_state, self.train_batch, rng)
            loss = float(loss)  # blocks until the last step is done
            seconds = time.perf_counter() - start
            return {"seconds": seconds, "steps": steps, "loss": loss}
        batch, method = self.decode_inputs[task]
        start = time.perf_counter()
        tokens = self._decoder(method)(self.params, batch)
        tokens = jax.device_get(tokens)
        seconds = time.perf_counter() - start
        lengths = (tokens != 0).sum(axis=1)
        return {"seconds": seconds, "generated_tokens_min": int(lengths.min()), "generated_tokens_max": int(lengths.max())}


class HfWorker:
    def __init__(self, arch, opts):
        import torch
        import transformers
        from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

        self.torch, self.transformers = torch, transformers
        self.opts = opts
        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count())
        self.capacity = opts["hf_expert_capacity"]
        self.config = SwitchTransformersConfig(
            vocab_size=arch["vocab_size"], d_model=arch["d_model"], d_kv=arch["head_dim"], d_ff=arch["d_ff_relu"],
            num_heads=arch["num_heads"], num_layers=arch["num_encoder_layers"],
            num_decoder_layers=arch["num_decoder_layers"],
            # HF makes layer i sparse when i % (layers // num_sparse) == 1: layers 1, 3, ... as mtmoe's sparse_every=2.
            num_sparse_encoder_layers=arch["num_encoder_layers"] // 2,
            num_sparse_decoder_layers=arch["num_decoder_layers"] // 2,
            num_experts=arch["num_experts"], expert_capacity=self.capacity, router_bias=False,
            router_jitter_noise=0.01, router_dtype="float32", router_ignore_padding_tokens=False,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
            dense_act_fn="relu", tie_word_embeddings=False, router_z_loss_coef=0.001, router_aux_loss_coef=0.01,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, use_cache=True,
        )
        self.model = SwitchTransformersForConditionalGeneration(self.config)
        # tie_word_embeddings=False unties the output projection (as T5 v1.1 and mtmoe) but in
        # transformers 5 it also unties the encoder's and decoder's input embeddings from
        # `shared`; mtmoe shares one input table between the stacks, so share it here too.
        self.model.encoder.embed_tokens = self.model.shared
        self.model.decoder.embed_tokens = self.model.shared
        self.num_params = int(sum(p.numel() for p in self.model.parameters()))
        self.optimizer = torch.optim.Adafactor(self.model.parameters(), lr=1e-3, beta2_decay=-0.8, foreach=True)
        self.inputs = {}

    def info(self):
        return {"num_params": self.num_params, "expert_capacity_per_sequence": self.capacity,
                "framework": f"torch {self.torch.__version__}, transformers {self.transformers.__version__}",
                "threads": self.torch.get_num_threads()}

    def prepare(self, task):
        torch = self.torch
        if task == "train":
            data = make_data(self.arch_for_data, batch=self.opts["batch"], src_len=self.opts["src_len"],
                             tgt_len=self.opts["tgt_len"], seed=0)
            self.train_batch = {
                "input_ids": torch.from_numpy(data["encoder_input_tokens"]).long(),
                "decoder_input_ids": torch.from_numpy(data["decoder_input_tokens"]).long(),
                "labels": torch.from_numpy(data["decoder_target_tokens"]).long(),
            }
            return self.run("train", steps=1)
        batch = int(task[4:]) if task.startswith("beam") else int(task[6:])
        data = make_data(self.arch_for_data, batch=batch, src_len=self.opts["src_len"], tgt_len=1, seed=1)
        self.inputs[task] = torch.from_numpy(data["encoder_input_tokens"]).long()
        return self.run(task, gen=2)  # eager PyTorch has nothing to compile: a short warm-up call

    def run(self, task, steps=None, gen=None):
        torch = self.torch
        if task == "train":
            self.model.train()
            steps = steps or self.opts["train_steps"]
            start = time.perf_counter()
            for _ in range(steps):
                out = self.model(**self.train_batch, output_router_logits=True)
                out.loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - start
            return {"seconds": seconds, "steps": steps, "loss": float(out.loss.detach())}
        self.model.eval()
        gen = gen or self.opts["gen"]
        beams = 4 if task.startswith("beam") else 1
        input_ids = self.inputs[task]
        start = time.perf_counter()
        with torch.inference_mode():
            tokens = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), num_beams=beams, do_sample=False,
                max_new_tokens=gen, min_new_tokens=gen, early_stopping=False,
            )
        seconds = time.perf_counter() - start
        lengths = (tokens[:, 1:] != 0).sum(dim=1)  # drop the decoder start token
        return {"seconds": seconds, "generated_tokens_min": int(lengths.min()), "generated_tokens_max": int(lengths.max())}


def worker_main(kind: str) -> None:
    """Reads {"cmd": "init"|"prepare"|"run"|"quit", ...} lines; answers one JSON line each."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol
    worker = None
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        try:
            if cmd == "quit":
                break
            if cmd == "init":
                cls = HfWorker if kind == "hf" else MtmoeWorker
                reset_peak_rss()
                worker = cls(msg["arch"], msg["opts"])
                worker.arch_for_data = msg["arch"]
                reply = {**worker.info(), "rss_kib": _status_kib("VmRSS"), "peak_rss_kib": _status_kib("VmHWM")}
            else:
                rss_before = _status_kib("VmRSS")
                reset_peak_rss()
                method = worker.prepare if cmd == "prepare" else worker.run
                reply = method(msg["task"])
                reply.update(rss_before_kib=rss_before, peak_rss_kib=_status_kib("VmHWM"))
        except Exception as err:  # reported to the driver, which stops with the message
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


class Worker:
    """A worker process (`script --worker KIND` under `python`) answering one JSON line per command."""

    def __init__(self, name: str, python: str, kind: str, env=None, script: str = os.path.abspath(__file__)):
        self.name = name
        self.proc = subprocess.Popen(
            [python, script, "--worker", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env, cwd=ROOT,
        )

    def call(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (see its traceback above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.name}: {reply['error']}")
        return reply

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


def throughput(task, reply, opts):
    """Target tokens/s (train) or sentences/s (decode) of one timed call."""
    if task == "train":
        return reply["steps"] * opts["batch"] * opts["tgt_len"] / reply["seconds"]
    batch = int(task[4:]) if task.startswith("beam") else int(task[6:])
    return batch / reply["seconds"]


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def print_table(result: dict) -> None:
    """The summary table of a result (also `--show RESULT.json`)."""
    summary, ratios, runs = result["summary"], result["ratios"], result["runs"]
    unit = {"train": "target tok/s"}
    print(f"\n{'task':9s} {'variant':24s} {'median':>9s} {'min..max':>17s} {'unit':12s} "
          f"{'peak RSS':>9s} {'w/ compile':>10s}  ratio vs HF: median (min..max per repetition)")
    for task in TASKS:
        for variant in summary:
            if task not in summary[variant]:
                continue
            s = summary[variant][task]
            t = s["throughput"]
            run_peak = max(r["peak_rss_kib"] for r in runs[variant][task]) / 1024
            ratio = ""
            if task in ratios.get(variant, {}):
                r = ratios[variant][task]
                ratio = f"{r['ratio_of_medians']:.2f}x ({r['per_repetition']['min']:.2f}..{r['per_repetition']['max']:.2f})"
            print(f"{task:9s} {variant:24s} {t['median']:9.3g} {t['min']:8.3g}..{t['max']:<8.3g} "
                  f"{unit.get(task, 'sentences/s'):12s} {run_peak:7.0f}Mi {s['peak_rss_mib']:8.0f}Mi  {ratio}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["mtmoe", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--gin_file", default="gin/models/mswitch_tiny.gin")
    parser.add_argument("--variants", default="mtmoe-relu,mtmoe,mtmoe-relu+xent_autodiff,hf",
                        help="mtmoe-relu: identical architecture to HF; mtmoe: the gated tiny model; "
                             "+xent_autodiff: with an autodiff-gradient cross-entropy "
                             "(benchmarks/patches.py)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--decode_variants", default="mtmoe-relu,hf",
                        help="variants that also run the decoding tasks (the others train only)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="training batch (sequences)")
    parser.add_argument("--src_len", type=int, default=64)
    parser.add_argument("--tgt_len", type=int, default=64)
    parser.add_argument("--gen", type=int, default=24, help="tokens generated per sentence when decoding")
    parser.add_argument("--train_steps", type=int, default=2, help="optimizer steps per timed training call")
    parser.add_argument("--dispatch", default="sort", choices=["sort", "einsum", "dropless"])
    parser.add_argument("--out", default=RESULT_PATH)
    parser.add_argument("--show", metavar="RESULT_JSON", help="print the table of a saved result and exit")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    if args.show:
        with open(args.show) as f:
            print_table(json.load(f))
        return

    if not os.path.exists(PEER_PYTHON):
        raise SystemExit(f"{PEER_PYTHON} is missing; run `bash benchmarks/peers/setup.sh` first")
    sys.path.insert(0, ROOT)
    from mtmoe import routing

    arch = read_architecture(args.gin_file)
    tasks = [t for t in args.tasks.split(",") if t]
    for task in tasks:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; use some of {','.join(TASKS)}")
    variants = [v for v in args.variants.split(",") if v]
    decode_variants = set(args.decode_variants.split(","))

    def runs_task(variant, task):
        return task == "train" or variant in decode_variants

    opts = {k: getattr(args, k) for k in ("batch", "src_len", "tgt_len", "gen", "train_steps", "dispatch")}
    opts["hf_expert_capacity"] = routing.expert_capacity(
        tokens_per_group=args.tgt_len, num_experts=arch["num_experts"], capacity_factor=arch["capacity_factor"],
        min_expert_capacity=arch["min_expert_capacity"])
    print(f"architecture ({args.gin_file}): {json.dumps(arch)}")
    print(f"options: {json.dumps(opts)}", flush=True)

    workers = {}
    for variant in variants:
        kind, python = ("hf", PEER_PYTHON) if variant == "hf" else ("mtmoe", PROJECT_PYTHON)
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)  # one CPU device, as a user has
        workers[variant] = Worker(variant, python, kind, env=env)
    info = {}
    try:
        for variant, worker in workers.items():
            info[variant] = worker.call(cmd="init", arch=arch, opts={**opts, "variant": variant})
            print(f"{variant}: {info[variant]}", flush=True)
        counts = {v: info[v]["num_params"] for v in variants}
        if len(set(counts.values())) != 1:
            print(f"WARNING: parameter counts differ: {counts}")

        prepared = {v: {} for v in variants}
        for task in tasks:
            for variant, worker in workers.items():
                if not runs_task(variant, task):
                    continue
                t0 = time.perf_counter()
                prepared[variant][task] = worker.call(cmd="prepare", task=task)
                prepared[variant][task]["wall_seconds"] = time.perf_counter() - t0
                print(f"prepared {variant:10s} {task:8s} in {prepared[variant][task]['wall_seconds']:.1f}s", flush=True)

        runs = {v: {t: [] for t in tasks if runs_task(v, t)} for v in variants}
        for rep in range(args.reps):
            for task in tasks:
                order = variants if rep % 2 == 0 else variants[::-1]  # alternate who goes first
                for variant in order:
                    if not runs_task(variant, task):
                        continue
                    reply = workers[variant].call(cmd="run", task=task)
                    reply["throughput"] = throughput(task, reply, opts)
                    runs[variant][task].append(reply)
                    print(f"rep {rep} {variant:10s} {task:8s} {reply['throughput']:10.1f}/s "
                          f"({reply['seconds']:.2f}s, peak RSS {reply['peak_rss_kib'] / 1024:.0f} MiB)", flush=True)
    finally:
        for worker in workers.values():
            worker.close()

    summary = {}
    for variant in variants:
        summary[variant] = {}
        for task in runs[variant]:
            values = [r["throughput"] for r in runs[variant][task]]
            summary[variant][task] = {
                "throughput": spread(values),
                "peak_rss_mib": max(r["peak_rss_kib"] for r in runs[variant][task] + [prepared[variant][task]]) / 1024,
                "rss_before_mib": runs[variant][task][0]["rss_before_kib"] / 1024,
            }
            if task != "train":
                summary[variant][task]["generated_tokens"] = sorted(
                    {r["generated_tokens_min"] for r in runs[variant][task]} | {r["generated_tokens_max"] for r in runs[variant][task]})
    ratios = {}
    if "hf" in variants:
        for variant in variants:
            if variant == "hf":
                continue
            ratios[variant] = {}
            for task in runs[variant]:
                if task not in runs["hf"]:
                    continue
                ours = [r["throughput"] for r in runs[variant][task]]
                theirs = [r["throughput"] for r in runs["hf"][task]]
                # Per-repetition ratios (same repetition = same machine load) give the spread.
                per_rep = [a / b for a, b in zip(ours, theirs)]
                ratios[variant][task] = {"ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
                                         "per_repetition": spread(per_rep)}

    result = {
        "benchmark": "hf_switch",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "note": "2 CPU cores shared with other processes; variants interleaved per repetition"},
        "command": "python benchmarks/hf_switch.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": git_state(),
        "architecture": arch, "options": opts, "workers": info, "summary": summary, "ratios": ratios,
        "prepare": prepared, "runs": runs,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print_table(result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
