"""The gin-configured training loop and its command line (T5X's `t5x.train`).

    python -m mtmoe.train --gin_file=gin/mswitch_tiny.gin --gin.MODEL_DIR=/tmp/tiny
    python -m mtmoe.train --gin_file=gin/experiments/demo.gin --gin.TRAIN_STEPS=3000
    mtmoe-train --gin_file=gin/mswitch_base.gin --gin.MODEL_DIR=gs://... --multiprocess

Flags as in T5X: `--gin_file` (repeatable, searched in `--gin_search_paths`),
`--gin.NAME=VALUE` bindings (macros or `configurable.param`), and the
multi-host flags `--multiprocess`, `--coordinator_address`, `--process_count`,
`--process_index`. The gin config is parsed and finalized before any work, so
an unset `%gin.REQUIRED` macro, a misspelt binding or a missing file is one
line on stderr (exit status 2).

One training step: the global batch [B, L] is sharded over ('data', 'expert'),
split into `num_microbatches` strided microbatches whose gradients are averaged
(lax.scan), and the optimizer update is applied under jit with explicit input
and output shardings. Dropout uses `fold_in(seed_rng, step)` (and the
microbatch index); JAX's partitionable threefry gives every device different
bits for its shard and the same bits on any mesh, so losses match across
meshes. A step whose loss, gradient or new parameters are not finite keeps the
previous state, and the run stops with the last good checkpoint intact.

Resuming is exact: the checkpoint holds params, optimizer state, step and the
number of batches the deterministic (seeded) input pipeline has delivered; a
restart rebuilds the pipeline and skips that many batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger("mtmoe.train")

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the run stopped early (checkpoint saved); rerun to resume
NONFINITE_EXIT_CODE = 3


class UsageError(ValueError):
    """Bad input to the trainer; its message is one line that says what to change."""


class NonFiniteLossError(RuntimeError):
    """The loss (or the update) became NaN/Inf; the message names the last good checkpoint."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved."""


# ----------------------------------------------------------------------------------------------
# Input pipeline (seqio + tf.data, imported lazily: the Translator must never import them)
# ----------------------------------------------------------------------------------------------

def get_mixture_or_task(name: str):
    """seqio Mixture/Task by name (registering this project's tasks); one-line error if unknown."""
    import seqio

    try:
        import tasks  # noqa: F401  registers the project's tasks and mixtures
    except ImportError as err:  # the registries are part of the project: say what is missing
        raise UsageError(f"cannot import the task registries (tasks/): {err}; run from the repository root") from None
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = sorted(set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names()))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(known)} are registered, e.g. {', '.join(known[:3])}"
        raise UsageError(f"unknown task or mixture {name!r} (MIXTURE_OR_TASK_NAME); {hint}") from None


def translation_pairs(name: str) -> list[tuple[str, tuple[str, str]]]:
    """(task name, (source, target)) of the translation tasks in a mixture or task."""
    provider = get_mixture_or_task(name)
    task_names = [t.name for t in getattr(provider, "tasks", [provider])]
    return [(n, pair) for n, pair in ((n, pair_from_task_name(n)) for n in task_names) if pair is not None]


def pair_from_task_name(task_name: str) -> tuple[str, str] | None:
    """'embedded_translate_zh_Hans_en' -> ('zh-Hans', 'en'); None for other tasks."""
    if "_translate_" not in f"_{task_name}":
        return None
    parts = task_name.split("translate_", 1)[1].split("_")
    try:
        from tasks import languages
    except ImportError:
        languages = None
    for cut in range(1, len(parts)):
        source, target = "-".join(parts[:cut]), "-".join(parts[cut:])
        if languages is None:
            return source, target
        try:
            languages.get_language(source)
            languages.get_language(target)
            return source, target
        except (ValueError, KeyError):
            continue
    return None


def make_dataset(*, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], split: str,
                 batch_size: int, shuffle: bool, seed: int | None, pack: bool, num_epochs: int | None,
                 use_cached: bool = False, shard_index: int = 0, num_shards: int = 1,
                 shuffle_buffer_size: int | None = None):
    """Batched tf.data.Dataset of EncDecFeatureConverter features for this process.

    shuffle_buffer_size None: seqio.get_dataset as is. A number: the same
    tasks, preprocessors and mixing rates, but each task shuffles with this
    buffer and none prefetches on its own thread (see _sampled_tasks).

    Deterministic for a given seed: seqio's shuffles and mixture sampling are
    seeded and tf.data keeps element order, so skipping n batches after a
    restart reproduces the uninterrupted stream."""
    import seqio
    import tensorflow as tf

    provider = get_mixture_or_task(mixture_or_task_name)
    shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
    if shuffle_buffer_size and not use_cached:
        dataset = _sampled_tasks(provider, lengths=dict(task_feature_lengths), split=split, shuffle=shuffle,
                                 seed=seed, num_epochs=num_epochs, shard_info=shard_info,
                                 shuffle_buffer_size=shuffle_buffer_size)
        dataset = seqio.EncDecFeatureConverter(pack=pack)(dataset, dict(task_feature_lengths))
    else:
        dataset = seqio.get_dataset(
            provider, task_feature_lengths=dict(task_feature_lengths),
            feature_converter=seqio.EncDecFeatureConverter(pack=pack), dataset_split=split,
            use_cached=use_cached, shuffle=shuffle, num_epochs=num_epochs, shard_info=shard_info,
            verbose=False, seed=seed)

    options = tf.data.Options()
    options.deterministic = True  # exact resume: the same seed must give the same batches in the same order
    # A mixture of hundreds of tasks otherwise starts threads per task and op; on a small host they
    # fight the training step for the CPU.
    options.threading.private_threadpool_size = max(2, min(8, os.cpu_count() or 2))
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options).batch(batch_size, drop_remainder=True)


def _sampled_tasks(provider, *, lengths, split, shuffle, seed, num_epochs, shard_info, shuffle_buffer_size):
    """A seqio Mixture (or Task) as seqio builds it, with small per-task shuffle buffers.

    seqio's Task.get_dataset shuffles each task with a 1000-example buffer and
    ends in prefetch(AUTOTUNE): a mixture of hundreds of tasks starts a
    prefetch thread per task, and the first batch waits for a buffer per task
    it touches. Here every task runs source -> preprocessors -> repeat ->
    trim -> shuffle(shuffle_buffer_size) pulled on demand, and the tasks are
    sampled with the mixture's rates (seqio.Mixture.get_rate), seeded."""
    import seqio
    import tensorflow as tf

    tasks = list(getattr(provider, "tasks", [provider]))
    tasks = [t for t in tasks if split in t.splits]
    if not tasks:
        raise UsageError(f"no task of {provider.name} has a {split!r} split")
    keys = [k for k in provider.output_features]
    datasets, rates = [], []
    for task in tasks:
        source = task.source
        if shard_info is not None and not source.supports_arbitrary_sharding:
            dataset = source.get_dataset(split=split, shuffle=shuffle, seed=seed).shard(
                shard_info.num_shards, shard_info.index)
        else:
            dataset = source.get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)
        dataset = task.preprocess_precache(dataset, seed=seed)
        if num_epochs != 1:
            dataset = dataset.repeat(num_epochs)
        dataset = task.preprocess_postcache(dataset, sequence_length=lengths, seed=seed)
        dataset = dataset.map(lambda ex: {k: ex[k][:lengths[k]] for k in keys},  # seqio's trim_output_features
                              num_parallel_calls=None)
        if shuffle:
            dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
        datasets.append(dataset)
        rates.append(float(provider.get_rate(task)) if isinstance(provider, seqio.Mixture) else 1.0)
    if len(datasets) == 1:
        return datasets[0]
    return tf.data.Dataset.sample_from_datasets(datasets, weights=rates, seed=seed)


class BatchIterator:
    """Numpy batches from a dataset, counting what it delivered (the data position)."""

    def __init__(self, dataset, *, skip_batches: int = 0):
        self.batches_consumed = skip_batches
        self._iterator = dataset.skip(skip_batches).as_numpy_iterator() if skip_batches else dataset.as_numpy_iterator()

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        self.batches_consumed += 1
        return batch


def vocabulary_of(mixture_or_task_name: str):
    """The targets vocabulary (a seqio.SentencePieceVocabulary) of a task or mixture."""
    provider = get_mixture_or_task(mixture_or_task_name)
    return provider.output_features["targets"].vocabulary


# ----------------------------------------------------------------------------------------------
# The train step
# ----------------------------------------------------------------------------------------------

def _is_summed(name: str) -> bool:
    return name.startswith("num_")


def make_train_step(*, model, optimizer, learning_rate: Callable, num_microbatches: int,
                    batch_constraint: Callable[[Any], Any] = lambda b: b,
                    loss_fn: Callable | None = None):
    """(params, opt_state, healthy, step, batch, rng) -> (params, opt_state, healthy, metrics).

    batch: dict of <int32>[B, L] features; rng: the run's dropout key; the
    step's key is fold_in(rng, step), microbatch i's fold_in(that, i).
    `healthy` (<bool>[]) is False once a step was not finite: from then on
    the state is left unchanged."""
    import jax
    import jax.numpy as jnp
    import optax

    loss_fn = loss_fn or model.loss_fn
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(params, opt_state, healthy, step, batch, rng):
        step_rng = jax.random.fold_in(rng, step)
        if num_microbatches <= 1:
            (_, metrics), grads = grad_fn(params, batch, step_rng)
        else:
            def split(x):  # [B, ...] -> [M, B/M, ...]; microbatch m holds rows m, m+M, ... (every device's share)
                return x.reshape((x.shape[0] // num_microbatches, num_microbatches) + x.shape[1:]).swapaxes(0, 1)

            microbatches = jax.tree.map(split, batch)

            def body(grad_sum, inputs):
                index, microbatch = inputs
                microbatch = batch_constraint(microbatch)
                (_, metrics), grads = grad_fn(params, microbatch, jax.random.fold_in(step_rng, index))
                return jax.tree.map(jnp.add, grad_sum, grads), metrics

            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, stacked = jax.lax.scan(body, zeros, (jnp.arange(num_microbatches), microbatches))
            grads = jax.tree.map(lambda g: g / num_microbatches, grads)
            metrics = {k: jnp.sum(v) if _is_summed(k) else jnp.mean(v) for k, v in stacked.items()}
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        grad_norm = optax.global_norm(grads)
        param_norm = optax.global_norm(new_params)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        ok = healthy & finite
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        metrics = dict(metrics, learning_rate=jnp.asarray(learning_rate(step), jnp.float32),
                       grad_norm=grad_norm, param_norm=param_norm)
        return keep(new_params, params), keep(new_opt_state, opt_state), ok, metrics

    return step_fn


# ----------------------------------------------------------------------------------------------
# Progress, summaries
# ----------------------------------------------------------------------------------------------

def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_line(*, step: int, train_steps: int, metrics: Mapping[str, float], steps_per_sec: float,
                  tokens_per_sec: float, eta_seconds: float) -> str:
    """One line a person can follow, e.g.
    'step 120/3000 loss 4.213 acc 23.1% lr 1.0e-02 | 5.2 steps/s 10.4k tok/s ETA 9m12s | experts aux 1.01 drop 0.3%'."""
    line = (f"step {step}/{train_steps} loss {metrics['loss']:.3f} acc {100 * metrics.get('accuracy', 0):.1f}% "
            f"lr {metrics.get('learning_rate', 0):.1e} | {steps_per_sec:.2f} steps/s "
            f"{tokens_per_sec / 1000:.1f}k tok/s ETA {_format_duration(eta_seconds)}")
    if "experts/auxiliary_loss" in metrics:
        line += (f" | experts aux {metrics['experts/auxiliary_loss']:.2f} "
                 f"drop {100 * metrics.get('experts/fraction_tokens_left_behind', 0):.1f}% "
                 f"conf {metrics.get('experts/router_confidence', 0):.2f}")
    return line


class Summaries:
    """TensorBoard (tensorboardX) writers in MODEL_DIR/{train,eval} and MODEL_DIR/metrics.jsonl."""

    def __init__(self, model_dir: str, *, enabled: bool):
        self.enabled = enabled
        self._writers: dict[str, Any] = {}
        self.model_dir = model_dir
        self._jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a") if enabled else None

    def write(self, kind: str, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        if kind not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[kind] = SummaryWriter(os.path.join(self.model_dir, kind))
        writer = self._writers[kind]
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
        writer.flush()
        self._jsonl.write(json.dumps({"kind": kind, "step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        if self._jsonl:
            self._jsonl.close()


class _StopSignal:
    """Turns SIGTERM (and Ctrl-C) into a flag the loop checks after each step."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


# ----------------------------------------------------------------------------------------------
# train()
# ----------------------------------------------------------------------------------------------

def train(*, model_dir: str, model, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
          batch_size: int, train_steps: int, optimizer: Callable[..., Any], learning_rate: Callable,
          num_microbatches: int = 1, data_parallelism: int | None = None, expert_parallelism: int = 1,
          model_parallelism: int = 1, seed: int = 0, data_seed: int | None = None, pack: bool = True,
          use_cached: bool = False, shuffle_buffer_size: int | None = None, train_split: str = "train",
          log_every: int = 100,
          save_every: int = 1000, keep_checkpoints: int = 3, eval_every: int = 0,
          eval_split: str = "validation", eval_batches: int = 4, bleu_pairs: int = 3,
          bleu_examples: int = 32, bleu_beam_size: int = 1, max_train_seconds: float | None = None,
          init_checkpoint: str | None = None, init_mode: str = "params",
          distill_teacher: str | None = None, distill_teacher_weight: float = 0.25,
          config_text: str = "", print_fn: Callable[[str], None] = print) -> dict:
    """Train (or resume) a model in `model_dir`; returns the final logged metrics.

    model: an `mtmoe.models.EncoderDecoderModel`. batch_size: global examples
    per step. optimizer: `optimizer(learning_rate=schedule)` ->
    optax.GradientTransformation. Saves every `save_every` steps and at the
    end, keeping the last `keep_checkpoints`; logs every `log_every`; runs
    validation loss and BLEU / chrF++ on `bleu_pairs` pairs every `eval_every`
    steps (0 = only at the end). `max_train_seconds` stops early (saving).
    `init_checkpoint` starts a fresh run from another model's checkpoint:
    init_mode "params" (same architecture), "upcycle" (dense -> MoE: MLP weights
    copied into every expert, fresh router) or "student" (non-expert weights
    from an MoE teacher, see mtmoe.upcycling). `distill_teacher` (a
    checkpoint dir) adds the teacher's probabilities to the loss with weight
    `distill_teacher_weight` (Switch section 4: 0.25).
    Raises UsageError (one line) on bad input before writing anything,
    NonFiniteLossError and Preempted as their names say.
    """
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from mtmoe import checkpoints, partitioning

    setup_started = time.time()
    # ---- check everything before touching MODEL_DIR --------------------------------------
    if not model_dir:
        raise UsageError("MODEL_DIR is empty; pass --gin.MODEL_DIR=<directory for checkpoints and logs>")
    model_dir = os.path.abspath(os.path.expanduser(str(model_dir)))
    for key in ("inputs", "targets"):
        if key not in task_feature_lengths:
            raise UsageError(f"TASK_FEATURE_LENGTHS lacks {key!r}; pass e.g. "
                             f"--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 64, 'targets': 64}}\"")
    if train_steps < 1 or batch_size < 1:
        raise UsageError(f"TRAIN_STEPS={train_steps} and BATCH_SIZE={batch_size} must be positive")
    if init_mode not in ("params", "upcycle", "student"):
        raise UsageError(f"init_mode={init_mode!r} is unknown; use 'params', 'upcycle' or 'student'")
    try:
        devices = None
        if data_parallelism is not None:  # an explicit mesh may use fewer devices than there are
            devices = jax.devices()[:data_parallelism * expert_parallelism * model_parallelism]
        mesh = partitioning.make_mesh(data=data_parallelism, expert=expert_parallelism, model=model_parallelism,
                                      devices=devices)
    except ValueError as err:
        raise UsageError(str(err)) from None
    data_shards = mesh.shape["data"] * mesh.shape["expert"]
    process_count, process_index = jax.process_count(), jax.process_index()
    if batch_size % (data_shards * num_microbatches):
        raise UsageError(
            f"BATCH_SIZE={batch_size} does not divide over the mesh: it must be a multiple of data x expert "
            f"= {mesh.shape['data']} x {mesh.shape['expert']} = {data_shards} (x {num_microbatches} microbatches); "
            f"change --gin.BATCH_SIZE or the mesh")
    if batch_size % process_count:
        raise UsageError(f"BATCH_SIZE={batch_size} must be a multiple of the {process_count} processes")
    try:
        partitioning.check_divisible(config=model.config, mesh=mesh, global_batch_size=batch_size // num_microbatches)
    except ValueError as err:
        raise UsageError(str(err)) from None
    vocabulary = vocabulary_of(mixture_or_task_name)  # also checks the task name
    pairs = translation_pairs(mixture_or_task_name)
    checkpoints.check_writable(model_dir)

    # ---- abstract state and shardings -------------------------------------------------------
    lengths = {"inputs": int(task_feature_lengths["inputs"]), "targets": int(task_feature_lengths["targets"])}
    micro_batch = batch_size // num_microbatches
    input_shapes = {"encoder_input_tokens": (micro_batch, lengths["inputs"]),
                    "decoder_input_tokens": (micro_batch, lengths["targets"])}
    rules = partitioning.LOGICAL_AXIS_RULES
    tx = optimizer(learning_rate=learning_rate)
    rng = jax.random.PRNGKey(seed)
    init_rng, dropout_rng = jax.random.split(rng)

    with _mesh_context(mesh, rules):
        boxed = jax.eval_shape(lambda r: model.get_initial_variables(r, input_shapes=input_shapes), init_rng)
        param_shardings = partitioning.logical_shardings(boxed["params"], mesh)
        abstract_params = nn.unbox(boxed["params"])
        abstract_opt = jax.eval_shape(tx.init, abstract_params)
        from mtmoe import optimizers

        opt_shardings = optimizers.optimizer_state_shardings(
            abstract_opt_state=abstract_opt, abstract_params=abstract_params, param_shardings=param_shardings, mesh=mesh)
    with_sharding = lambda tree, sh: jax.tree.map(  # noqa: E731
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sh)
    target_params, target_opt = with_sharding(abstract_params, param_shardings), with_sharding(abstract_opt, opt_shardings)

    ckpt = checkpoints.Checkpointer(model_dir=model_dir, keep=keep_checkpoints)
    try:
        restored = ckpt.restore_latest(abstract_params=target_params, abstract_opt_state=target_opt)
    except checkpoints.CheckpointError as err:
        raise UsageError(str(err)) from None

    teacher = None
    if distill_teacher:
        from mtmoe import upcycling

        teacher = upcycling.load_teacher(distill_teacher)

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    if restored is not None:
        params, opt_state, start_step = restored.params, restored.opt_state, restored.step
        batches_consumed = int(restored.meta.get("data", {}).get("batches_consumed", start_step))
        print_fn(f"resuming from {ckpt.directory}/{start_step} (data position: {batches_consumed} batches)")
    else:
        with _mesh_context(mesh, rules):
            init_fn = jax.jit(lambda r: nn.unbox(model.get_initial_variables(r, input_shapes=input_shapes)["params"]),
                              out_shardings=param_shardings)
            params = init_fn(init_rng)
        if init_checkpoint:
            from mtmoe import upcycling

            try:
                params = upcycling.initialize_from(init_checkpoint, mode=init_mode, params=params,
                                                   param_shardings=param_shardings, print_fn=print_fn)
            except checkpoints.CheckpointError as err:
                raise UsageError(str(err)) from None
        with _mesh_context(mesh, rules):
            opt_state = jax.jit(tx.init, in_shardings=(param_shardings,), out_shardings=opt_shardings)(params)
        start_step, batches_consumed = 0, 0

    # ---- from here on MODEL_DIR is written ------------------------------------------------------
    if process_index == 0:
        checkpoints.write_atomic(os.path.join(model_dir, "config.gin"), config_text)
    spm_path = getattr(vocabulary, "sentencepiece_model_file", None)
    meta_static = {
        "model_config": _config_dict(model.config),
        "model_kwargs": {k: getattr(model, k) for k in ("label_smoothing", "z_loss", "aux_loss_factor",
                                                        "router_z_loss_factor") if hasattr(model, k)},
        "gin_config": config_text,
        "mixture_or_task_name": mixture_or_task_name,
        "task_feature_lengths": lengths,
        "language_pairs": [list(p) for _, p in pairs],
        "vocabulary": checkpoints.vocabulary_meta(spm_path, extra_ids=getattr(vocabulary, "extra_ids", 0))
        if spm_path else None,
    }
    summaries = Summaries(model_dir, enabled=process_index == 0)

    def save(step: int, consumed: int):
        meta = dict(meta_static, data={"batches_consumed": consumed, "batch_size": batch_size,
                                       "seed": data_seed if data_seed is not None else seed})
        ckpt.save(step=step, params=params, opt_state=opt_state, meta=meta)

    # ---- data -------------------------------------------------------------------------------------
    local_batch = batch_size // process_count
    pipeline_seed = data_seed if data_seed is not None else seed
    train_data = BatchIterator(
        make_dataset(mixture_or_task_name=mixture_or_task_name, task_feature_lengths=lengths, split=train_split,
                     batch_size=local_batch, shuffle=True, seed=pipeline_seed, pack=pack, num_epochs=None,
                     use_cached=use_cached, shard_index=process_index, num_shards=process_count,
                     shuffle_buffer_size=shuffle_buffer_size),
        skip_batches=batches_consumed)

    # ---- compiled functions ------------------------------------------------------------------------
    batch_sharding = partitioning.batch_sharding(mesh)

    def constrain_batch(b):
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), b)

    loss_fn = None
    if teacher is not None:
        from mtmoe import upcycling

        loss_fn = upcycling.distillation_loss_fn(student=model, teacher=teacher,
                                                 teacher_weight=distill_teacher_weight)
    step_fn = make_train_step(model=model, optimizer=tx, learning_rate=learning_rate,
                              num_microbatches=num_microbatches, batch_constraint=constrain_batch, loss_fn=loss_fn)
    train_step = jax.jit(step_fn, in_shardings=(param_shardings, opt_shardings, replicated, replicated,
                                                batch_sharding, replicated),
                         out_shardings=(param_shardings, opt_shardings, replicated, replicated),
                         donate_argnums=(0, 1))
    eval_step = jax.jit(lambda p, b: model.loss_fn(p, b, None)[1],
                        in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)

    from mtmoe.evaluation import Evaluator

    evaluator = Evaluator(
        model=model, mixture_or_task_name=mixture_or_task_name, lengths=lengths, batch_size=batch_size,
        eval_split=eval_split, eval_batches=eval_batches, pack=pack, pairs=pairs, bleu_pairs=bleu_pairs,
        bleu_examples=bleu_examples, beam_size=bleu_beam_size, vocabulary=vocabulary, mesh=mesh,
        eval_step=eval_step, process_index=process_index, process_count=process_count, print_fn=print_fn)

    # ---- the loop -----------------------------------------------------------------------------------
    stop = _StopSignal()
    healthy = jnp.asarray(True)
    step = start_step
    last_saved = start_step if restored is not None else None
    pending: list[tuple[int, Any, float]] = []  # (step, device metrics, non-padding tokens) since last log
    last_metrics: dict[str, float] = {}
    started = time.time()
    window_start, window_steps, window_tokens = time.time(), 0, 0.0
    print_fn(f"set up in {_format_duration(time.time() - setup_started)} (model, checkpoint, input pipeline); "
             f"the first step also compiles and fills the input pipeline's shuffle buffers")
    print_fn(f"training {model_dir}: steps {start_step}..{train_steps}, batch {batch_size} "
             f"({num_microbatches} microbatches), mesh {dict(mesh.shape)}, {process_count} process(es), "
             f"{_count(abstract_params) / 1e6:.2f}M params")
    try:
        while step < train_steps:
            host_batch = next(train_data)
            tokens = float(np.count_nonzero(host_batch["encoder_input_tokens"])
                           + np.count_nonzero(host_batch["decoder_target_tokens"])) * process_count
            global_batch = partitioning.shard_batch(host_batch, mesh)
            with _mesh_context(mesh, rules):
                params, opt_state, healthy, metrics = train_step(params, opt_state, healthy, jnp.int32(step),
                                                                 global_batch, dropout_rng)
            step += 1
            if step == start_step + 1 and process_index == 0:
                jax.block_until_ready(metrics)
                print_fn(f"first step done after {_format_duration(time.time() - started)} (compilation and first batch)")
            pending.append((step, metrics, tokens))
            window_steps += 1
            window_tokens += tokens
            out_of_time = max_train_seconds is not None and time.time() - started > max_train_seconds
            stopping = _agree(stop.received is not None, process_count)
            due_log = step % log_every == 0 or step == train_steps or out_of_time or stopping
            due_save = step % save_every == 0 or step == train_steps or out_of_time or stopping
            if due_log or due_save:
                fetched = jax.device_get([m for _, m, _ in pending])
                for (logged_step, _, _), values in zip(pending, fetched):
                    values = {k: float(v) for k, v in values.items()}
                    if not all(math.isfinite(values[k]) for k in ("loss", "grad_norm", "param_norm")):
                        good = ckpt.latest_step()
                        where = f"{ckpt.directory}/{good}" if good is not None else "none was saved yet"
                        raise NonFiniteLossError(
                            f"loss became {'NaN' if math.isnan(values['loss']) else 'non-finite'} at step "
                            f"{logged_step} (loss={values['loss']}, grad_norm={values['grad_norm']}); training "
                            f"stopped. Last good checkpoint: {where}. Lower the learning rate or check the data, "
                            f"then rerun to resume from it")
                    last_metrics = values
                    if log_every == 1 or logged_step == step:
                        summaries.write("train", logged_step, values)
                pending.clear()
                now = time.time()
                steps_per_sec = window_steps / max(now - window_start, 1e-9)
                tokens_per_sec = window_tokens / max(now - window_start, 1e-9)
                last_metrics.update({"timing/steps_per_second": steps_per_sec, "timing/tokens_per_second": tokens_per_sec})
                summaries.write("train", step, {"timing/steps_per_second": steps_per_sec,
                                                "timing/tokens_per_second": tokens_per_sec})
                if due_log and process_index == 0:
                    print_fn(progress_line(step=step, train_steps=train_steps, metrics=last_metrics,
                                           steps_per_sec=steps_per_sec, tokens_per_sec=tokens_per_sec,
                                           eta_seconds=(train_steps - step) / max(steps_per_sec, 1e-9)))
                window_start, window_steps, window_tokens = time.time(), 0, 0.0
            if due_save:
                save(step, train_data.batches_consumed)
                last_saved = step
            if eval_every and step % eval_every == 0 and step < train_steps:
                summaries.write("eval", step, evaluator(params))
            if due_save or due_log:
                window_start = time.time()  # saving and evaluating do not count against steps/s
            if stopping:
                raise Preempted(f"received {stop.received or 'a stop request'}: saved checkpoint "
                                f"{ckpt.directory}/{step}; rerun the same command to resume")
            if out_of_time:
                print_fn(f"stopping after {_format_duration(time.time() - started)} "
                         f"(max_train_seconds={max_train_seconds}); checkpoint {ckpt.directory}/{step}")
                break
        if last_saved != step:
            save(step, train_data.batches_consumed)
        stop.restore()  # the final checkpoint is on disk: a SIGTERM now may end the final evaluation at once
        eval_metrics = evaluator(params)
        summaries.write("eval", step, eval_metrics)
        last_metrics.update({f"eval/{k}": v for k, v in eval_metrics.items()})
        last_metrics["step"] = step
        last_metrics["train_seconds"] = time.time() - started
        return last_metrics
    finally:
        stop.restore()
        summaries.close()
        ckpt.close()


def _agree(flag: bool, process_count: int) -> bool:
    """True on every process when any process got a stop signal (they must save the same step)."""
    if process_count == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _count(tree) -> int:
    import jax

    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _config_dict(config) -> dict:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


class _mesh_context:
    """`with mesh` + flax logical axis rules, for tracing jitted functions."""

    def __init__(self, mesh, rules):
        from flax import linen as nn

        self._contexts = [mesh, nn.logical_axis_rules(rules)]

    def __enter__(self):
        for c in self._contexts:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self._contexts):
            c.__exit__(*exc)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtmoe.train",
        description="Train or resume an mtmoe model from gin files (T5X's command line).",
        epilog="Example: python -m mtmoe.train --gin_file=gin/experiments/demo.gin --gin.MODEL_DIR=/tmp/demo")
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable), applied in order")
    parser.add_argument("--mode", choices=("train", "eval", "infer"), default="train",
                        help="train (default), eval (gin/runs/eval.gin) or infer (gin/runs/infer.gin)")
    parser.add_argument("--gin_search_paths", default="", help="comma-separated directories to look for gin files in")
    parser.add_argument("--multiprocess", action="store_true", help="start jax.distributed (multi-host training)")
    parser.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-host)")
    parser.add_argument("--process_count", type=int, default=None, help="number of processes (multi-host)")
    parser.add_argument("--process_index", type=int, default=None, help="this process's index (multi-host)")
    return parser


def parse_command_line(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(flags, gin bindings) from argv; `--gin.NAME=VALUE` becomes the binding `NAME = VALUE`."""
    bindings, rest = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--gin.") or arg.startswith("--gin_bindings"):
            if arg.startswith("--gin_bindings"):
                body = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
                if "=" not in arg:
                    i += 1
                bindings.append(body)
            else:
                body = arg[len("--gin."):]
                if "=" not in body:
                    raise UsageError(f"{arg} has no value; write --gin.NAME=VALUE")
                name, value = body.split("=", 1)
                bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    flags, unknown = _argument_parser().parse_known_args(rest)
    if unknown:
        raise UsageError(f"unknown flag(s) {' '.join(unknown)}; see python -m mtmoe.train --help")
    return flags, bindings


def _resolve_gin_file(path: str, search_paths: list[str]) -> str:
    candidates = [path] + [os.path.join(d, path) for d in search_paths]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.R_OK):
                raise UsageError(f"gin file {candidate} is not readable; check its permissions")
            return candidate
    where = ", ".join(["."] + search_paths)
    raise UsageError(f"gin file {path} not found (searched {where}); check --gin_file and --gin_search_paths")


def parse_gin(*, gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()) -> None:
    """Parse gin files and bindings and finalize the config; UsageError (one line) on any problem."""
    import gin

    gin.clear_config()  # a second run in one process (tests) starts from a clean, unlocked config
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    search = list(dict.fromkeys([p for p in search_paths if p] + [os.getcwd(), repo_root]))
    for directory in search:
        gin.add_config_file_search_path(directory)
    files = [_resolve_gin_file(f, search) for f in gin_files]
    if not files:
        raise UsageError("no --gin_file given; e.g. --gin_file=gin/experiments/demo.gin")
    try:
        gin.parse_config_files_and_bindings(files, [], finalize_config=False)
        _check_macro_bindings(bindings)
        gin.parse_config_files_and_bindings([], list(bindings), finalize_config=False)
        gin.finalize()
    except UsageError:
        raise
    except ImportError as err:
        raise UsageError(f"a gin file imports a module that cannot be imported: {err}") from None
    except Exception as err:  # gin reports parse and binding errors with several exception types
        raise UsageError(_gin_error_line(err)) from None


def _check_macro_bindings(bindings: Sequence[str]) -> None:
    """A `--gin.NAME=VALUE` macro must be one the gin files define: a misspelt macro is an error, not a no-op."""
    import gin

    defined = sorted(key[0] for key in gin.config._CONFIG if key[1] == "gin.macro")  # noqa: SLF001
    for binding in bindings:
        name = binding.split("=", 1)[0].strip()
        if "." in name or "/" in name or not name:
            continue  # configurable.parameter: gin itself checks it
        if name not in defined:
            close = difflib.get_close_matches(name, defined, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "no gin file defines it"
            raise UsageError(f"--gin.{name} sets a macro the gin files do not use; {hint}")


def _gin_error_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    if "set to `%gin.REQUIRED` but not subsequently overridden" in text:
        macro = text.split("/macro.value")[0].split()[-1]
        return f"gin macro {macro} is required but not set; pass --gin.{macro}=VALUE or set it in a gin file"
    if "No configurable matching" in text:
        return f"gin binding refers to something that does not exist ({text[:200]}); check the spelling"
    if "not a parameter of" in text or "not a valid parameter" in text or "Unknown parameter" in text:
        return f"gin binding names a parameter that does not exist ({text[:200]}); check the spelling"
    return f"gin config error: {text[:300]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.ERROR)  # seqio's per-run notices drown the progress lines
    try:
        flags, bindings = parse_command_line(argv)
        if flags.multiprocess or flags.coordinator_address:
            from mtmoe import partitioning

            partitioning.initialize_distributed(coordinator_address=flags.coordinator_address,
                                                num_processes=flags.process_count, process_id=flags.process_index)
        _hide_accelerators_from_tensorflow()
        import gin

        import mtmoe.train as this_module  # the same module object whether run as __main__ or imported

        _import_task_registries()  # before gin locks its config: tasks/ registers gin configurables
        parse_gin(gin_files=flags.gin_file, bindings=bindings, search_paths=flags.gin_search_paths.split(","))
        with gin.unlock_config():
            config_text = gin.config_str()
        if flags.mode == "eval":
            from mtmoe import evaluation

            result = gin.get_configurable(evaluation.evaluate)()
        elif flags.mode == "infer":
            from mtmoe import evaluation

            gin.get_configurable(evaluation.infer)()
            return 0
        else:
            result = gin.get_configurable(this_module.train)(config_text=config_text)
    except UsageError as err:
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 2
    except ValueError as err:
        from mtmoe.checkpoints import CheckpointError

        if not isinstance(err, CheckpointError):
            raise
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return NONFINITE_EXIT_CODE
    except Preempted as err:
        print(_first_line(err), file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_CODE
    except Exception as err:
        message = " ".join(str(err).split())
        if _is_gin_call_error(message):
            print(f"error: {_gin_error_line(err)}", file=sys.stderr)
            return 2
        raise
    summary = {k: round(v, 4) for k, v in result.items() if k in ("step", "loss", "accuracy", "train_seconds")
               or k.startswith("eval/")}
    print(f"done: {json.dumps(summary)}", flush=True)
    return 0


def _first_line(err: Exception) -> str:
    """The message without the 'In call to configurable ...' lines gin appends."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _is_gin_call_error(message: str) -> bool:
    return "Required bindings for" in message or "gin.REQUIRED" in message


def _import_task_registries() -> None:
    try:
        import tasks
    except ImportError:  # reported with its reason when a task is looked up
        return
    register = getattr(tasks, "register", None)
    if register is not None:
        register()  # imports seqio and registers every task and mixture now


def _hide_accelerators_from_tensorflow() -> None:
    """seqio uses TensorFlow only on the CPU; keep it from grabbing accelerator memory."""
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    except Exception:  # TensorFlow absent or already initialised: nothing to hide
        pass


def console_main() -> None:
    """`mtmoe-train` console script."""
    sys.exit(main())


if __name__ == "__main__":
    # Run through the importable module so gin and the exception classes are the ones in mtmoe.train.
    from mtmoe.train import main as _main

    sys.exit(_main())
