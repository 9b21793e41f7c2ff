"""mtmoe against Hugging Face `SwitchTransformersForConditionalGeneration` of the same size and shape.

    .venv/bin/python benchmarks/hf_switch.py                 # the headline: 5 repetitions, ~5 minutes
    .venv/bin/python benchmarks/hf_switch.py --tasks train --variants mtmoe-relu,hf,hf-compile --reps 7

Needs the peer venv (its own, never the project's dependencies):
    bash benchmarks/peers/setup.sh        # -> benchmarks/.venv-peers with torch (CPU) + transformers

One architecture, built in both frameworks from the macros of
gin/models/mswitch_tiny.gin (vocabulary, d_model, heads, head_dim, layers,
experts, every-other-layer MoE, capacity factor 1.25):

- HF's Switch MLP is T5's original Dense-ReLU-Dense (wi, wo), not gated. So the
  identical architecture is mtmoe with activations ("relu",) and d_ff = 1.5 x the
  tiny model's gated d_ff (2 * D * 1.5F = 3 * D * F): `mtmoe-relu`. The tiny
  model itself (`mtmoe`, gated GELU, d_ff F) has the same parameter count and
  FLOPs per token, and is what users run. Parameter counts must match.
- Capacity: HF fixes `expert_capacity` tokens per expert per sequence (its
  router's cumulative sum runs over the sequence axis); mtmoe routes over groups
  of `max_group_size` tokens, set here to the sequence length so that both drop
  alike, and HF's expert_capacity is mtmoe's `routing.expert_capacity` for one
  sequence. HF computes only the kept tokens (a loop over experts with boolean
  indexing); mtmoe computes every slot of its fixed-shape expert buffers, i.e.
  1.25 x the tokens: mtmoe does the more work.
- Untied output projection in both (T5 v1.1), one input embedding shared by the
  encoder and the decoder.

Two HF variants: `hf`, eager PyTorch, and `hf-compile`, the same model under
`torch.compile` (inductor) the way HF documents it: training calls
`torch.compile(model)` (forward and backward compiled; the optimizer stays
eager), generation runs with a static cache and `CompileConfig`, HF's
automatic compilation of the decoding step (`_compile_all_devices`, HF's flag
for compiling on CPU; it covers greedy decoding and sampling, not beam search).
When compiling fails, or compiles nothing, that is recorded in one line (JSON
and table note) and the eager row stands.

Tasks (random init, random token ids, no padding):
  train     target tokens/s of `--train_steps` whole optimizer steps
            (forward + backward + Adafactor): mtmoe.train's jitted step
            (trainer.compile_steps, optax.adafactor, donated state) on its
            default mesh, one CPU device per core (mtmoe/cpu_devices.py); HF's
            model(..., labels, output_router_logits=True).loss.backward() +
            torch.optim.Adafactor(foreach=True).
  beam32    sentences/s translating 32 sources with beam 4,
  greedy1   sentences/s translating one source greedily; every output exactly
            `--gen` tokens long (mtmoe: an EOS id that never occurs; HF:
            min_new_tokens = max_new_tokens).
Peak RSS: the worker process's during the timed training calls (VmHWM, reset
through /proc/self/clear_refs before each call). Not given for decoding: the
mtmoe workers keep what training freed (mtmoe.host_memory's retain policy, as
mtmoe.train runs), so their decoding peak would be training's.

Each variant runs in its own long-lived worker process (mtmoe under the
project's interpreter, HF under the peer venv's), which builds each task and
runs it `--warmup_calls` times untimed (compilation included) before the
repetitions. A repetition times every (variant, task) once: the tasks in an
order of `protocol.orders`, and within a task the variants in an order of
their own, so the calls a ratio pairs are next to each other in time. Ratios
are mtmoe's throughput over the best HF row of the task (eager or compiled,
whichever has the higher median), per repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "hf_switch"
PEER_PYTHON = os.path.join(ROOT, "benchmarks", ".venv-peers", "bin", "python")
TASKS = ("train", "beam32", "greedy1")
BEAM_SIZE = 4
VARIANTS = {  # name: (label in the table, framework)
    "mtmoe-relu": ("mtmoe, ReLU MLP (HF's architecture)", "mtmoe"),
    "mtmoe": ("mtmoe, gated GELU (the tiny model)", "mtmoe"),
    "hf": ("HF, eager", "hf"),
    "hf-compile": ("HF, torch.compile", "hf"),
}
# Why HF runs a task uncompiled when asked to compile it, as far as known (transformers 5.24).
NOT_COMPILED = {"beam": ": transformers' beam search calls the model directly; generate() compiles the decoding step "
                        "for greedy decoding and sampling only"}
NEVER_EMITTED_EOS = -1  # an id no softmax row can produce: forces every output to full length


def decode_task(task: str) -> tuple[str, int]:
    """("beam" | "greedy", batch) of a decoding task named like beam32 or greedy1."""
    match = re.fullmatch(r"(beam|greedy)(\d+)", task)
    if not match:
        raise ValueError(f"unknown task {task!r}: train, or beam<batch> / greedy<batch> (e.g. beam32, greedy1)")
    return match.group(1), int(match.group(2))


def rate_format(task: str) -> str:
    """How a throughput of `task` reads: whole target tokens/s, 3 significant digits of sentences/s."""
    return "{:.0f}" if task == "train" else "{:.3g}"


def task_label(task: str) -> str:
    if task == "train":
        return "train step (target tokens/s)"
    method, batch = decode_task(task)
    return f"{'greedy' if method == 'greedy' else f'beam {BEAM_SIZE}'}, batch {batch} (sentences/s)"


# ---------------------------------------------------------------------------
# Memory: peak RSS of this process since the last reset


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
# Architecture and data


def read_architecture(gin_file: str) -> dict:
    """The tiny model's architecture macros, read with gin from `gin_file`."""
    import gin

    gin.add_config_file_search_path(ROOT)
    gin.parse_config_file(os.path.join(ROOT, gin_file))

    def macro(name):
        value = gin.query_parameter(f"%{name}")
        while isinstance(value, gin.config.ConfigurableReference):  # a macro bound to another macro
            value = gin.query_parameter("%" + value.scoped_selector.split("/")[0].split(" ")[-1])
        return value

    if macro("ENCODER_SPARSE_EVERY") != 2 or macro("DECODER_SPARSE_EVERY") != 2:
        raise ValueError("this benchmark maps mtmoe's every-2nd-layer MoE onto HF's num_sparse_*_layers; "
                         "keep sparse_every=2")
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
        "capacity_factor": macro("TRAIN_CAPACITY_FACTOR"),
        "min_expert_capacity": macro("MIN_EXPERT_CAPACITY"),
    }
    gin.clear_config()
    if arch["d_ff_gated"] % 2:
        raise ValueError("MLP_DIM must be even so that the ReLU twin has d_ff = 1.5 x MLP_DIM")
    arch["d_ff_relu"] = arch["d_ff_gated"] * 3 // 2  # 2 * D * 1.5F = 3 * D * F parameters and FLOPs
    return arch


def random_tokens(rng, shape, vocab_size):
    # Ids 2.. (0 = pad, 1 = EOS): every position is a real token.
    return rng.integers(2, vocab_size, size=shape).astype("int32")


def make_data(arch, *, batch, src_len, tgt_len, seed):
    """A batch of random tokens as mtmoe's loss reads it: {encoder_input_tokens, decoder_*} numpy arrays."""
    import numpy as np

    rng = np.random.default_rng(seed)
    targets = random_tokens(rng, (batch, tgt_len), arch["vocab_size"])
    return {
        "encoder_input_tokens": random_tokens(rng, (batch, src_len), arch["vocab_size"]),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), "int32"), targets[:, :-1]], axis=1),
        "decoder_loss_weights": np.ones((batch, tgt_len), "float32"),
    }


# ---------------------------------------------------------------------------
# Workers: one process per variant, reading JSON commands on stdin


class MtmoeWorker:
    """mtmoe's model, a train step of the trainer's kind, and the model's decoders (`predict_batch`, jitted)."""

    def __init__(self, arch, opts):
        from mtmoe import host_memory

        host_memory.retain_freed_memory()  # as mtmoe.train and the Translator's entry points do, before JAX allocates
        import jax
        import optax
        from flax import linen as nn

        from mtmoe import models, network, routing
        from mtmoe.moe_config import MoeConfig

        self.jax, self.arch, self.opts = jax, arch, opts
        relu = opts["variant"] == "mtmoe-relu"
        group = opts["tgt_len"]
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
            min_expert_capacity=arch["min_expert_capacity"])
        models.EOS_ID = NEVER_EMITTED_EOS  # predict_batch reads it at trace time: full-length outputs
        self.model = model = models.EncoderDecoderModel(config=self.config)
        shapes = {"encoder_input_tokens": (2, opts["src_len"]), "decoder_input_tokens": (2, opts["tgt_len"])}
        variables = jax.jit(lambda r: model.get_initial_variables(r, input_shapes=shapes))(jax.random.PRNGKey(0))
        self.params = nn.unbox(variables["params"])
        self.num_params = int(sum(x.size for x in jax.tree.leaves(self.params)))
        # T5X's Adafactor settings (mtmoe/optimizers.py binds the same ones).
        tx = optax.adafactor(learning_rate=1e-3, decay_rate=0.8, clipping_threshold=1.0,
                             multiply_by_parameter_scale=True, min_dim_size_to_factor=128)
        # Training is mtmoe.train's: its jitted step (the Adafactor update and the finite-or-keep guard included)
        # on its default mesh, every device of the process: one per core on a CPU (worker_main splits the cores
        # as mtmoe.train does). Decoding runs on one device, as the Translator does.
        from mtmoe import partitioning, trainer

        self.mesh = partitioning.make_mesh()
        train_shapes = {"encoder_input_tokens": (opts["batch"], opts["src_len"]),
                        "decoder_input_tokens": (opts["batch"], opts["tgt_len"])}
        init_rng, self.dropout_rng = jax.random.split(jax.random.PRNGKey(0))
        layout = trainer.state_layout(model=model, optimizer=tx, mesh=self.mesh, input_shapes=train_shapes,
                                      init_rng=init_rng)
        self.train_state = trainer.initialize_state(model=model, optimizer=tx, layout=layout, mesh=self.mesh,
                                                    input_shapes=train_shapes, init_rng=init_rng,
                                                    print_fn=lambda line: None)
        self.train_step, _ = trainer.compile_steps(model=model, optimizer=tx, learning_rate=lambda step: 1e-3,
                                                   num_microbatches=1, mesh=self.mesh, layout=layout)
        self.healthy, self.step = trainer.healthy_flag(self.mesh), 0
        self.params = jax.device_put(self.params, jax.devices()[0])
        self.inputs = {}

    def info(self):
        return {"num_params": self.num_params, "expert_capacity_per_sequence": self.capacity,
                "framework": f"jax {self.jax.__version__}", "threads": "XLA:CPU default",
                "train_mesh": dict(self.mesh.shape)}

    def prepare(self, task):
        """Builds the task's inputs and its jitted function; the first call compiles."""
        jnp = self.jax.numpy
        if task == "train":
            from mtmoe import partitioning

            data = make_data(self.arch, batch=self.opts["batch"], src_len=self.opts["src_len"],
                             tgt_len=self.opts["tgt_len"], seed=0)
            self.inputs[task] = partitioning.shard_batch(data, self.mesh)
            return
        method, batch = decode_task(task)
        data = make_data(self.arch, batch=batch, src_len=self.opts["src_len"], tgt_len=1, seed=1)
        decode = self.jax.jit(lambda p, b: self.model.predict_batch(
            p, b, decoding=method, beam_size=BEAM_SIZE, max_decode_length=self.opts["gen"]))
        self.inputs[task] = ({"encoder_input_tokens": jnp.asarray(data["encoder_input_tokens"])}, decode)

    def run(self, task):
        jax = self.jax
        if task == "train":
            from mtmoe import partitioning

            params, opt_state = self.train_state
            start = time.perf_counter()
            with partitioning.mesh_context(self.mesh):
                for _ in range(self.opts["train_steps"]):
                    params, opt_state, self.healthy, metrics = self.train_step(
                        params, opt_state, self.healthy, jax.numpy.int32(self.step), self.inputs[task],
                        self.dropout_rng)
                    self.step += 1
            loss = float(metrics["loss"])  # blocks until the last step is done
            self.train_state = params, opt_state
            return {"seconds": time.perf_counter() - start, "loss": loss}
        batch, decode = self.inputs[task]
        start = time.perf_counter()
        tokens = jax.device_get(decode(self.params, batch))
        return {"seconds": time.perf_counter() - start, "generated_tokens": output_lengths(tokens.tolist())}

    def compile_counters(self) -> dict:
        return {}  # jax.jit compiles every task: nothing optional to check


class HfWorker:
    """HF's SwitchTransformers of the same architecture, eager or under torch.compile."""

    def __init__(self, arch, opts):
        import torch
        import transformers
        from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

        self.torch, self.transformers, self.arch, self.opts = torch, transformers, arch, opts
        self.compile = opts["variant"] == "hf-compile"
        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count())
        self.capacity = opts["hf_expert_capacity"]
        config = SwitchTransformersConfig(
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
        self.model = SwitchTransformersForConditionalGeneration(config)
        # tie_word_embeddings=False unties the output projection (as T5 v1.1 and mtmoe) but in
        # transformers 5 it also unties the encoder's and decoder's input embeddings from
        # `shared`; mtmoe shares one input table between the stacks, so share it here too.
        self.model.encoder.embed_tokens = self.model.shared
        self.model.decoder.embed_tokens = self.model.shared
        self.num_params = int(sum(p.numel() for p in self.model.parameters()))
        self.optimizer = torch.optim.Adafactor(self.model.parameters(), lr=1e-3, beta2_decay=-0.8, foreach=True)
        self.train_model = torch.compile(self.model) if self.compile else self.model
        self.inputs = {}

    def info(self):
        return {"num_params": self.num_params, "expert_capacity_per_sequence": self.capacity,
                "framework": f"torch {self.torch.__version__}, transformers {self.transformers.__version__}",
                "threads": self.torch.get_num_threads()}

    def _generate_options(self) -> dict:
        """Extra generate() arguments: HF's static cache and automatic compilation for hf-compile, none for eager."""
        if not self.compile:
            return {}
        from transformers import CompileConfig

        compile_config = CompileConfig()
        compile_config._compile_all_devices = True  # HF compiles only on accelerators unless told so
        return {"cache_implementation": "static", "compile_config": compile_config}

    def prepare(self, task):
        torch = self.torch
        if task == "train":
            data = make_data(self.arch, batch=self.opts["batch"], src_len=self.opts["src_len"],
                             tgt_len=self.opts["tgt_len"], seed=0)
            self.inputs[task] = {
                "input_ids": torch.from_numpy(data["encoder_input_tokens"]).long(),
                "decoder_input_ids": torch.from_numpy(data["decoder_input_tokens"]).long(),
                "labels": torch.from_numpy(data["decoder_target_tokens"]).long(),
            }
        else:
            _, batch = decode_task(task)
            data = make_data(self.arch, batch=batch, src_len=self.opts["src_len"], tgt_len=1, seed=1)
            self.inputs[task] = torch.from_numpy(data["encoder_input_tokens"]).long()

    def run(self, task):
        torch = self.torch
        if task == "train":
            self.model.train()
            start = time.perf_counter()
            for _ in range(self.opts["train_steps"]):
                out = self.train_model(**self.inputs[task], output_router_logits=True)
                out.loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            return {"seconds": time.perf_counter() - start, "loss": float(out.loss.detach())}
        self.model.eval()
        gen = self.opts["gen"]
        method, _ = decode_task(task)
        input_ids = self.inputs[task]
        start = time.perf_counter()
        with torch.inference_mode():
            tokens = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                num_beams=BEAM_SIZE if method == "beam" else 1, do_sample=False,
                max_new_tokens=gen, min_new_tokens=gen, early_stopping=False, **self._generate_options())
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "generated_tokens": output_lengths(tokens[:, 1:].tolist())}  # less the start token

    def compile_counters(self) -> dict:
        """Graphs torch.compile has compiled in this process, and the graph breaks it met on the way."""
        if not self.compile:
            return {}
        from torch._dynamo.utils import counters

        return {"graphs": int(counters["stats"]["unique_graphs"]),
                "graph_breaks": {reason.splitlines()[0]: int(n) for reason, n in counters["graph_break"].items()}}


def output_lengths(rows) -> list[int]:
    """The distinct lengths of decoded rows, up to the last non-pad token (0 pads the end, and may occur inside)."""
    return sorted({max((i + 1 for i, token in enumerate(row) if token), default=0) for row in rows})


def compiled_since(before: dict, after: dict) -> dict:
    """What torch.compile did between two compile_counters(): graphs compiled, graph breaks by reason."""
    if not after:
        return {}
    breaks = {reason: n - before.get("graph_breaks", {}).get(reason, 0) for reason, n in after["graph_breaks"].items()}
    return {"graphs": after["graphs"] - before.get("graphs", 0),
            "graph_breaks": {reason: n for reason, n in breaks.items() if n}}


def timed_call(worker, task: str) -> dict:
    """One call of `task` in a worker: its reply with the peak RSS during the call (and what was compiled)."""
    before = worker.compile_counters()
    reset_peak_rss()
    reply = worker.run(task)
    reply["peak_rss_kib"] = _status_kib("VmHWM")
    compiled = compiled_since(before, worker.compile_counters())
    if compiled:
        reply["compiled"] = compiled
    return reply


class NotCompiled(RuntimeError):
    """torch.compile was asked for, and the task ran without compiling anything."""


def warm_up(worker, task: str, calls: int) -> dict:
    """Builds `task` and runs it `calls` times untimed; the compile variant must have compiled something."""
    started = time.perf_counter()
    before = worker.compile_counters()
    worker.prepare(task)
    replies = [timed_call(worker, task) for _ in range(calls)]
    reply = {"seconds": time.perf_counter() - started, "calls": replies}
    compiled = compiled_since(before, worker.compile_counters())
    if compiled:
        if not compiled["graphs"]:
            kind = task.rstrip("0123456789")  # beam32 -> beam
            raise NotCompiled(f"nothing was compiled, {task} ran eagerly" + NOT_COMPILED.get(kind, ""))
        reply["compiled"] = compiled
    return reply


def worker_main(kind: str) -> None:
    """Reads {"cmd": "init"|"prepare"|"run"|"quit", ...} lines; answers one JSON line each."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the replies
    worker = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                break
            if msg["cmd"] == "init":
                if kind == "mtmoe":
                    from mtmoe import cpu_devices

                    cpu_devices.split_cores()  # as mtmoe.train does, before JAX starts
                worker = (HfWorker if kind == "hf" else MtmoeWorker)(msg["arch"], msg["opts"])
                reply = {**worker.info(), "rss_kib": _status_kib("VmRSS")}
            elif msg["cmd"] == "prepare":
                reply = warm_up(worker, msg["task"], msg["calls"])
            else:
                reply = timed_call(worker, msg["task"])
        except Exception as err:  # reported to the driver in one line
            if not isinstance(err, NotCompiled):  # an expected outcome, not a bug to trace
                import traceback

                traceback.print_exc()
            reply = {"error": one_line(err)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def one_line(err: BaseException, limit: int = 240) -> str:
    """`Type: first line of the message`, cut to `limit` characters."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------
# The driver


class WorkerFailed(RuntimeError):
    """A worker's command failed; `alive` says whether the worker can take the next one."""

    def __init__(self, message: str, *, alive: bool):
        super().__init__(message)
        self.alive = alive


class Worker:
    """A worker process (`script --worker KIND` under `python`) answering one JSON line per command."""

    def __init__(self, name: str, python: str, kind: str, env=None, script: str = os.path.abspath(__file__)):
        self.name = name
        self.proc = subprocess.Popen([python, script, "--worker", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)

    def call(self, timeout: float | None = None, **msg) -> dict:
        """The worker's reply to `msg`; WorkerFailed on an error reply, a dead worker or (killed) after `timeout` s."""
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        if timeout is not None and not select.select([self.proc.stdout], [], [], timeout)[0]:
            self.proc.kill()
            raise WorkerFailed(f"no answer within {timeout:.0f} s (worker stopped)", alive=False)
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerFailed(f"worker {self.name} died (exit status {self.proc.wait()}; its traceback is above)",
                               alive=False)
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerFailed(reply["error"], alive=True)
        return reply

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        self.proc.wait(timeout=60)


def start_workers(variants, arch, opts) -> tuple[dict, dict]:
    """({variant: Worker}, {variant: its info}), each worker initialised (model built)."""
    if any(VARIANTS[v][1] == "hf" for v in variants) and not os.path.exists(PEER_PYTHON):
        raise SystemExit(f"{NAME}: {os.path.relpath(PEER_PYTHON, ROOT)} is missing; run "
                         "`bash benchmarks/peers/setup.sh` first")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user has
    workers, info = {}, {}
    for variant in variants:
        kind = VARIANTS[variant][1]
        workers[variant] = Worker(variant, PEER_PYTHON if kind == "hf" else sys.executable, kind, env=env)
    for variant, worker in workers.items():
        info[variant] = worker.call(cmd="init", arch=arch, opts={**opts, "variant": variant})
        print(f"{variant}: {json.dumps(info[variant])}", flush=True)
    return workers, info


def prepare_all(workers, tasks, args) -> tuple[dict, dict]:
    """Warms every (variant, task) up; ({variant: {task: reply}}, {variant: {task: why it failed}}).

    A failure of a torch.compile variant is recorded and that (variant, task)
    left out; one of any other variant stops the benchmark. A worker that died
    or did not answer in --compile_timeout seconds takes its remaining tasks with it."""
    prepared, failed, stopped = {v: {} for v in workers}, {v: {} for v in workers}, set()
    for task in tasks:
        for variant, worker in workers.items():
            if variant in stopped:
                failed[variant][task] = "not run: the worker had stopped at an earlier task"
                continue
            compiles = variant == "hf-compile"
            try:
                reply = worker.call(cmd="prepare", task=task, calls=args.warmup_calls,
                                    timeout=args.compile_timeout if compiles else None)
            except WorkerFailed as err:
                if not compiles:
                    raise SystemExit(f"{NAME}: {variant} {task}: {err}") from None
                failed[variant][task] = str(err)
                if not err.alive:
                    stopped.add(variant)
                print(f"{variant} {task}: FAILED: {err}", flush=True)
                continue
            prepared[variant][task] = reply
            print(f"{variant} {task}: built, compiled and ran {args.warmup_calls}x in {reply['seconds']:.1f} s",
                  flush=True)
    return prepared, failed


def measure(workers, prepared, tasks, reps) -> dict:
    """{variant: {task: [reply per repetition]}}: tasks in protocol.orders, variants in orders of their own."""
    runs = {v: {t: [] for t in prepared[v]} for v in workers}
    variants = list(workers)
    task_orders, variant_orders = protocol.orders(tasks, reps, seed=1), protocol.orders(variants, reps)
    for rep in range(reps):
        started = time.perf_counter()
        for task in task_orders[rep]:
            for variant in variant_orders[rep]:
                if task in runs[variant]:
                    runs[variant][task].append(workers[variant].call(cmd="run", task=task))
        timed = ", ".join(f"{v} {t} {r[-1]['seconds']:.2f} s" for v in runs for t, r in runs[v].items())
        print(f"rep {rep + 1} ({time.perf_counter() - started:.0f} s): {timed}", flush=True)
    return runs


def throughput(task: str, seconds: float, opts: dict) -> float:
    """Target tokens/s (train) or sentences/s (decoding) of one timed call."""
    if task == "train":
        return opts["train_steps"] * opts["batch"] * opts["tgt_len"] / seconds
    return decode_task(task)[1] / seconds


def summarise(runs, opts) -> dict:
    """{variant: {task: throughput and peak RSS spreads}}."""
    summary = {}
    for variant, by_task in runs.items():
        summary[variant] = {}
        for task, replies in by_task.items():
            summary[variant][task] = {
                "throughput": protocol.spread(throughput(task, r["seconds"], opts) for r in replies),
                "seconds": protocol.spread(r["seconds"] for r in replies),
                "peak_rss_mib": protocol.spread(r["peak_rss_kib"] / 1024 for r in replies),
                "recompiled_in_timed_calls": sum(r.get("compiled", {}).get("graphs", 0) for r in replies),
            }
            if task != "train":
                summary[variant][task]["generated_tokens"] = sorted({n for r in replies for n in r["generated_tokens"]})
    return summary


def ratios_to_best_hf(runs, summary, opts) -> dict:
    """{mtmoe variant: {task: mtmoe over the faster HF variant's throughput, per repetition, and which one}}."""
    out = {}
    for variant in (v for v in runs if VARIANTS[v][1] == "mtmoe"):
        out[variant] = {}
        for task in runs[variant]:
            hf = [v for v in runs if VARIANTS[v][1] == "hf" and task in runs[v]]
            if not hf:
                continue
            best = max(hf, key=lambda v: summary[v][task]["throughput"]["median"])
            ours = [throughput(task, r["seconds"], opts) for r in runs[variant][task]]
            theirs = [throughput(task, r["seconds"], opts) for r in runs[best][task]]
            out[variant][task] = {"over": best, **protocol.ratio_spread(ours, theirs)}
    return out


def table(tasks, variants, summary, ratios, failed) -> dict:
    """The result table: one row per (task, variant), failed torch.compile rows included as such."""
    rows = []
    for task in tasks:
        best = {r[task]["over"] for r in ratios.values() if task in r}
        for variant in variants:
            label = VARIANTS[variant][0]
            if task in failed[variant]:
                rows.append([task_label(task), label, "not measured (see the notes)", "-", "-"])
                continue
            s = summary[variant][task]
            if task in ratios.get(variant, {}):
                r = ratios[variant][task]
                ratio = f"{r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f}) over {VARIANTS[r['over']][0]}"
            else:
                ratio = "the best HF row" if variant in best else "-"
            rate = protocol.fmt_spread(s["throughput"], rate_format(task))
            rss = protocol.fmt_spread(s["peak_rss_mib"], "{:.0f}") if task == "train" else "-"
            rows.append([task_label(task), label, rate, rss, ratio])
    return {"columns": ["task", "implementation", "throughput", "peak RSS, MiB", "mtmoe / best HF"], "rows": rows}


def compile_notes(prepared, failed, summary) -> list[str]:
    """One line per torch.compile failure, and one on what it compiled (graphs, graph breaks, recompiles)."""
    notes = [f"No {VARIANTS[variant][0]} row for {task_label(task).split(' (')[0]}: {why}; the eager row stands."
             for variant, by_task in failed.items() for task, why in by_task.items()]
    for variant, by_task in prepared.items():
        compiled = {task: reply["compiled"] for task, reply in by_task.items() if "compiled" in reply}
        if not compiled:
            continue
        reasons = sorted({reason for c in compiled.values() for reason in c["graph_breaks"]})
        recompiled = {task: summary[variant][task]["recompiled_in_timed_calls"] for task in compiled}
        notes.append(
            f"{variant} compiled " + ", ".join(
                f"{task} {c['graphs']} graphs with {sum(c['graph_breaks'].values())} graph breaks"
                for task, c in compiled.items())
            + (f" (graph breaks: {'; '.join(reasons)})" if reasons else "")
            + "; graphs compiled during the timed calls: "
            + ", ".join(f"{task} {n}" for task, n in recompiled.items()) + ".")
    return notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["mtmoe", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--gin_file", default="gin/models/mswitch_tiny.gin")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, out of {','.join(VARIANTS)}")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="comma-separated: train, beam<batch>, greedy<batch> (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="training batch (sequences)")
    parser.add_argument("--src_len", type=int, default=64)
    parser.add_argument("--tgt_len", type=int, default=64)
    parser.add_argument("--gen", type=int, default=24, help="tokens generated per sentence when decoding")
    parser.add_argument("--train_steps", type=int, default=2, help="optimizer steps per timed training call")
    parser.add_argument("--warmup_calls", type=int, default=2,
                        help="untimed calls of each (variant, task) before the repetitions, compilation included")
    parser.add_argument("--compile_timeout", type=float, default=600,
                        help="seconds the torch.compile variant may take to warm a task up before it counts as failed")
    parser.add_argument("--dispatch", default="sort", choices=["sort", "einsum", "dropless"])
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    variants = [v for v in args.variants.split(",") if v]
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants out of {','.join(VARIANTS)} (unknown: {', '.join(unknown) or 'none given'})")
    for task in (t for t in tasks if t != "train"):
        try:
            decode_task(task)
        except ValueError as err:
            parser.error(str(err))
    if args.src_len != args.tgt_len:
        parser.error("--src_len and --tgt_len must be equal: one routing group is one sequence in both frameworks")
    run = protocol.Run(NAME, args, argv=argv)

    from mtmoe import routing

    arch = read_architecture(args.gin_file)
    opts = {k: getattr(args, k) for k in ("batch", "src_len", "tgt_len", "gen", "train_steps", "dispatch")}
    opts["hf_expert_capacity"] = routing.expert_capacity(
        tokens_per_group=args.tgt_len, num_experts=arch["num_experts"], capacity_factor=arch["capacity_factor"],
        min_expert_capacity=arch["min_expert_capacity"])
    print(f"architecture: {json.dumps(arch)}\noptions: {json.dumps(opts)}", flush=True)
    workers, info = start_workers(variants, arch, opts)
    try:
        prepared, failed = prepare_all(workers, tasks, args)
        runs = measure(workers, prepared, tasks, args.reps)
    finally:
        for worker in workers.values():
            worker.close()

    summary = summarise(runs, opts)
    ratios = ratios_to_best_hf(runs, summary, opts)
    result_table = table(tasks, variants, summary, ratios, failed)
    print("\n".join(["", *render_table(result_table), ""]), flush=True)
    run.write(
        title="Training and decoding against Hugging Face",
        about=about(arch, args),
        table=result_table,
        headline=headline(ratios, summary),
        notes=[*compile_notes(prepared, failed, summary), *setup_notes(info, prepared, summary, opts, args)],
        results={"architecture": arch, "options": {**opts, "warmup_calls": args.warmup_calls}, "workers": info,
                 "failed": failed, "prepare": prepared, "summary": summary, "ratios": ratios, "runs": runs},
    )


def about(arch: dict, args) -> str:
    """What the table measures, on what, in one paragraph."""
    return (f"mtmoe against Hugging Face `SwitchTransformersForConditionalGeneration` of the same shape, from "
            f"`{args.gin_file}` (d_model {arch['d_model']}, {arch['num_encoder_layers']}+"
            f"{arch['num_decoder_layers']} layers, {arch['num_experts']} experts at every other FFN, vocabulary "
            f"{arch['vocab_size']}), on CPU in float32, random weights and random tokens. HF's expert MLP is ReLU, "
            f"so `mtmoe, ReLU MLP` is the identical model (d_ff {arch['d_ff_relu']}); the gated tiny model "
            f"(d_ff {arch['d_ff_gated']}) has the same parameters and FLOPs per token. Train: "
            f"{args.train_steps} whole optimizer steps (forward, backward, Adafactor) on {args.batch} x "
            f"({args.src_len} source, {args.tgt_len} target) tokens, mtmoe's with mtmoe.train's step on its default "
            f"mesh (one CPU device per core, the batch split between them), peak RSS of the worker process during "
            f"them; "
            f"decoding: {args.gen} tokens per sentence from random sources of {args.src_len} tokens. HF runs eager "
            "and under `torch.compile` (training: the model compiled; generation: static cache and HF's automatic "
            "compilation). Ratio: mtmoe's throughput over the faster HF row of the task, per repetition (above 1: "
            "mtmoe is faster).")


def setup_notes(info, prepared, summary, opts, args) -> list[str]:
    """Parameter counts, capacity, frameworks, warm-up times, and any output not --gen tokens long."""
    params = {v: i["num_params"] for v, i in info.items()}
    frameworks = {VARIANTS[v][1]: i["framework"] for v, i in info.items()}
    notes = [
        "Parameters: " + ", ".join(f"{v} {n:,}" for v, n in params.items())
        + ("." if len(set(params.values())) == 1 else " -- THE COUNTS DIFFER: the models are not the same size."),
        f"Expert capacity {opts['hf_expert_capacity']} tokens per expert and sequence in both; "
        + "; ".join(frameworks.values()) + "; PyTorch threads: "
        + ", ".join(f"{v} {i['threads']}" for v, i in info.items() if VARIANTS[v][1] == "hf") + ".",
        f"Before the repetitions, each (variant, task) was built and run {args.warmup_calls}x untimed, compilation "
        "included (seconds): " + ", ".join(f"{v} {t} {r['seconds']:.0f}" for v in prepared
                                           for t, r in prepared[v].items()) + ".",
    ]
    lengths = {(v, t): s["generated_tokens"] for v in summary for t, s in summary[v].items() if t != "train"}
    if any(n != [args.gen] for n in lengths.values()):
        notes.append("Not every output was --gen tokens long: "
                     + ", ".join(f"{v} {t} {n}" for (v, t), n in lengths.items()) + ".")
    return notes


def headline(ratios, summary) -> str:
    """mtmoe with HF's architecture against the best HF row, per task."""
    variant = "mtmoe-relu" if "mtmoe-relu" in ratios else next(iter(ratios), None)
    if variant is None or not ratios[variant]:
        return ""
    def rate(v, task):
        return rate_format(task).format(summary[v][task]["throughput"]["median"])

    parts = [f"{task_label(task).split(' (')[0]}: {r['median']:.2f}x ({rate(variant, task)} against "
             f"{rate(r['over'], task)}, {VARIANTS[r['over']][0]})" for task, r in ratios[variant].items()]
    return f"{VARIANTS[variant][0]} over the faster Hugging Face row: " + "; ".join(parts) + "."


def render_table(t: dict) -> list[str]:
    from benchmarks import render

    return render.table_lines(t)


if __name__ == "__main__":
    main()
