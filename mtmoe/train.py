"""The gin-configured training loop and its command line (T5X's `t5x.train`).

    python -m mtmoe.train --gin_file=gin/mswitch_tiny.gin --gin.MODEL_DIR="'/tmp/tiny'"
    python -m mtmoe.train --gin_file=gin/experiments/demo.gin --gin.MODEL_DIR="'/tmp/demo'" --gin.TRAIN_STEPS=3000
    mtmoe-train --gin_file=gin/mswitch_base.mtmoe.gin --gin.MODEL_DIR="'gs://bucket/run'" --multiprocess_gpu

T5X's flags (mtmoe/command_line.py, `--help`): `--gin_file` (repeatable,
searched in `--gin_search_paths`), `--gin.NAME=VALUE` bindings (macros or
`configurable.param`), `--run_mode`, `--multiprocess_gpu` (with
`--coordinator_address`, `--process_count`, `--process_index`),
`--tfds_data_dir`, `--seqio_additional_cache_dirs` and absl's `--flagfile`.
The gin config is parsed and finalized before any work, so a bad flag, an
unset `%gin.REQUIRED` macro, a misspelt binding or a missing file is one line
on stderr (exit status 2).

One training step: the global batch [B, L] is sharded over ('data', 'expert'),
split into `num_microbatches` strided microbatches whose gradients are averaged
(lax.scan), and the optimizer update is applied under jit with explicit input
and output shardings. Dropout uses `fold_in(seed_rng, step)` (and the
microbatch index); JAX's partitionable threefry gives every device different
bits for its shard and the same bits on any mesh, so losses match across
meshes. A step whose loss, gradient or new parameters are not finite keeps the
previous state, and the run stops with the last good checkpoint intact.

The data comes from the source `DatasetConfig` names: a seqio task or mixture
through tf.data, or its pre-tokenized cache (`python -m mtmoe.token_cache`,
`--gin.TRAIN_CACHE_DIR`), which holds the same rows in the same order and
reads without TensorFlow. Resuming is exact: the checkpoint holds params,
optimizer state, step and the number of batches the deterministic (seeded)
source has delivered; a restart skips that many batches.

This module holds `train` (gin: `train.train`) and `main`; the parts it uses:
train_config.py (the configuration objects), command_line.py (flags, gin,
UsageError), input_pipeline.py and token_cache.py (the data sources),
trainer.py (state layout, initialization, the jitted step), monitoring.py
(progress, summaries, SIGTERM and NaN stops), checkpoints.py, evaluation.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from mtmoe import command_line, cpu_devices, host_memory, input_pipeline, monitoring, trainer
from mtmoe.command_line import UsageError
from mtmoe.monitoring import NonFiniteLossError, Preempted, format_duration
from mtmoe.train_config import CheckpointConfig, DatasetConfig, DistillationConfig, EvalConfig, MeshConfig

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the run stopped early (checkpoint saved); rerun to resume
NONFINITE_EXIT_CODE = 3


def train(*, model, model_dir: str, train_dataset_cfg: DatasetConfig, train_steps: int,
          optimizer: Callable[..., Any], learning_rate: Callable, mesh_cfg: MeshConfig = MeshConfig(),
          checkpoint_cfg: CheckpointConfig = CheckpointConfig(), eval_cfg: EvalConfig = EvalConfig(),
          distillation_cfg: DistillationConfig = DistillationConfig(), seed: int = 0, log_every: int = 100,
          max_train_seconds: float | None = None, config_text: str = "",
          print_fn: Callable[[str], None] = print) -> dict:
    """Train (or resume) a model in `model_dir`; returns the final logged metrics.

    model: an `mtmoe.models.EncoderDecoderModel`. train_dataset_cfg: the task
    (or its pre-tokenized cache) and the global batch. optimizer:
    `optimizer(learning_rate=schedule)` -> optax.GradientTransformation. The
    other configs are described in mtmoe.train_config. `max_train_seconds`
    stops early (saving). Raises UsageError (one line) on bad input before
    writing anything, NonFiniteLossError and Preempted as their names say.
    """
    import jax
    import jax.numpy as jnp

    from mtmoe import checkpoints, partitioning

    setup_started = time.time()
    dataset_cfg, batch_size, num_microbatches = train_dataset_cfg, train_dataset_cfg.batch_size, mesh_cfg.num_microbatches
    # ---- check everything before touching MODEL_DIR --------------------------------------
    if not model_dir:
        raise UsageError("MODEL_DIR is empty; pass --gin.MODEL_DIR=<directory for checkpoints and logs>")
    model_dir = os.path.abspath(os.path.expanduser(str(model_dir)))
    mesh = _checked_mesh(model=model, dataset_cfg=dataset_cfg, mesh_cfg=mesh_cfg, train_steps=train_steps,
                         checkpoint_cfg=checkpoint_cfg)
    process_count, process_index = jax.process_count(), jax.process_index()
    data_seed = dataset_cfg.seed if dataset_cfg.seed is not None else seed
    source = input_pipeline.make_source(dataset_cfg, seed=data_seed)  # also checks the task name (or the cache)
    vocabulary, pairs, lengths = source.vocabulary, source.pairs, source.lengths
    checkpoints.check_writable(model_dir)

    # ---- state: restored, or initialized (possibly from another checkpoint) ------------------------
    micro_batch = batch_size // num_microbatches
    input_shapes = {"encoder_input_tokens": (micro_batch, lengths["inputs"]),
                    "decoder_input_tokens": (micro_batch, lengths["targets"])}
    tx = optimizer(learning_rate=learning_rate)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    layout = trainer.state_layout(model=model, optimizer=tx, mesh=mesh, input_shapes=input_shapes, init_rng=init_rng)
    ckpt = checkpoints.Checkpointer(model_dir=model_dir, keep=checkpoint_cfg.keep)
    try:
        restored = ckpt.restore_latest(abstract_params=layout.target_params, abstract_opt_state=layout.target_opt_state)
        if restored is not None:
            params, opt_state, start_step = restored.params, restored.opt_state, restored.step
            batches_consumed = int(restored.meta.get("data", {}).get("batches_consumed", start_step))
            print_fn(f"resuming from {ckpt.directory}/{start_step} (data position: {batches_consumed} batches)")
        else:
            params, opt_state = trainer.initialize_state(
                model=model, optimizer=tx, layout=layout, mesh=mesh, input_shapes=input_shapes, init_rng=init_rng,
                init_checkpoint=checkpoint_cfg.init_checkpoint, init_mode=checkpoint_cfg.init_mode, print_fn=print_fn)
            start_step, batches_consumed = 0, 0
    except checkpoints.CheckpointError as err:
        raise UsageError(str(err)) from None
    loss_fn = None
    if distillation_cfg.teacher:
        from mtmoe import upcycling

        loss_fn = upcycling.distillation_loss_fn(student=model, teacher=upcycling.load_teacher(distillation_cfg.teacher),
                                                 teacher_weight=distillation_cfg.teacher_weight)
    train_data = source.train_batches(batch_size=batch_size // process_count, skip_batches=batches_consumed,
                                      process_index=process_index, process_count=process_count)

    # ---- from here on MODEL_DIR is written ------------------------------------------------------
    if process_index == 0:
        checkpoints.write_atomic(os.path.join(model_dir, "config.gin"), config_text)
    meta_static = trainer.checkpoint_meta(model=model, config_text=config_text,
                                          mixture_or_task_name=dataset_cfg.mixture_or_task_name, lengths=lengths,
                                          pairs=pairs, vocabulary=vocabulary)
    summaries = monitoring.Summaries(model_dir, enabled=process_index == 0)

    def save(step: int, consumed: int):
        meta = dict(meta_static, data={"batches_consumed": consumed, "batch_size": batch_size, "seed": data_seed})
        ckpt.save(step=step, params=params, opt_state=opt_state, meta=meta)

    # ---- compiled functions ------------------------------------------------------------------------
    train_step, eval_step = trainer.compile_steps(model=model, optimizer=tx, learning_rate=learning_rate,
                                                  num_microbatches=num_microbatches, mesh=mesh, layout=layout,
                                                  loss_fn=loss_fn)

    from mtmoe.evaluation import Evaluator

    evaluator = Evaluator(model=model, source=source, config=eval_cfg, batch_size=batch_size, mesh=mesh,
                          eval_step=eval_step, process_index=process_index, process_count=process_count,
                          print_fn=print_fn)

    # ---- the loop -----------------------------------------------------------------------------------
    stop = monitoring.StopSignal()
    healthy = trainer.healthy_flag(mesh)
    step = start_step
    last_saved = start_step if restored is not None else None
    started = time.time()
    progress = _Progress(train_steps=train_steps, max_train_seconds=max_train_seconds, started=started,
                         summaries=summaries, checkpointer=ckpt, log_every=log_every,
                         print_fn=print_fn if process_index == 0 else None)
    print_fn(f"set up in {format_duration(time.time() - setup_started)} (model, checkpoint, input pipeline); "
             f"the first step also compiles and fills the input pipeline's shuffle buffers")
    print_fn(f"data: {source.describe()}")
    print_fn(f"training {model_dir}: steps {start_step}..{train_steps}, batch {batch_size} "
             f"({num_microbatches} microbatches), mesh {dict(mesh.shape)}{_cpu_note(mesh)}, "
             f"{process_count} process(es), "
             f"{trainer.count_params(layout.abstract_params) / 1e6:.2f}M params")
    try:
        while step < train_steps:
            host_batch = next(train_data)
            tokens = float(np.count_nonzero(host_batch["encoder_input_tokens"])
                           + np.count_nonzero(host_batch["decoder_target_tokens"])) * process_count
            global_batch = partitioning.shard_batch(host_batch, mesh)
            with partitioning.mesh_context(mesh):
                params, opt_state, healthy, metrics = train_step(params, opt_state, healthy, jnp.int32(step),
                                                                 global_batch, dropout_rng)
            step += 1
            if step == start_step + 1 and process_index == 0:
                jax.block_until_ready(metrics)
                print_fn(f"first step done after {format_duration(time.time() - started)} (compilation and first batch)")
            progress.add(step, metrics, tokens)
            out_of_time = max_train_seconds is not None and time.time() - started > max_train_seconds
            stopping = monitoring.stop_requested(stop, process_count=process_count)
            due_log = step % log_every == 0 or step == train_steps or out_of_time or stopping
            due_save = step % checkpoint_cfg.save_every == 0 or step == train_steps or out_of_time or stopping
            if due_log or due_save:
                progress.flush(step, print_line=due_log)
            if due_save:
                save(step, train_data.batches_consumed)
                last_saved = step
            if eval_cfg.every and step % eval_cfg.every == 0 and step < train_steps:
                summaries.write("eval", step, evaluator(params))
            if due_save or due_log:
                progress.restart_window()  # saving and evaluating do not count against steps/s
            if stopping:
                raise Preempted(f"received {stop.received or 'a stop request'}: saved checkpoint "
                                f"{ckpt.directory}/{step}; rerun the same command to resume")
            if out_of_time:
                print_fn(f"stopping after {format_duration(time.time() - started)} "
                         f"(max_train_seconds={max_train_seconds}); checkpoint {ckpt.directory}/{step}")
                break
        if last_saved != step:
            save(step, train_data.batches_consumed)
        stop.restore()  # the final checkpoint is on disk: a SIGTERM now may end the final evaluation at once
        eval_metrics = evaluator(params)
        summaries.write("eval", step, eval_metrics)
        return {**progress.last_metrics, **{f"eval/{k}": v for k, v in eval_metrics.items()},
                "step": step, "train_seconds": time.time() - started}
    finally:
        stop.restore()
        summaries.close()
        ckpt.close()


class _Progress:
    """The metrics of the steps since the last log: fetched together (one device sync), checked for
    non-finite values, written to the summaries, and summed up in a progress line with steps/s and ETA."""

    def __init__(self, *, train_steps: int, max_train_seconds: float | None, started: float, summaries, checkpointer,
                 log_every: int, print_fn: Callable[[str], None] | None):
        self.train_steps, self.max_train_seconds, self.started = train_steps, max_train_seconds, started
        self.summaries, self.checkpointer, self.log_every, self.print_fn = summaries, checkpointer, log_every, print_fn
        self.pending: list[tuple[int, Any]] = []   # (step, device metrics) since the last flush
        self.last_metrics: dict[str, float] = {}
        self.restart_window()

    def restart_window(self) -> None:
        self.window_start, self.window_steps, self.window_tokens = time.time(), 0, 0.0

    def add(self, step: int, metrics, tokens: float) -> None:
        self.pending.append((step, metrics))
        self.window_steps += 1
        self.window_tokens += tokens

    def flush(self, step: int, *, print_line: bool) -> None:
        """Raises NonFiniteLossError (keeping the last good checkpoint) if a step's loss was not finite."""
        import jax

        fetched = jax.device_get([m for _, m in self.pending])
        for (logged_step, _), values in zip(self.pending, fetched):
            values = {k: float(v) for k, v in values.items()}
            monitoring.check_finite(values, step=logged_step, checkpointer=self.checkpointer)
            self.last_metrics = values
            if self.log_every == 1 or logged_step == step:
                self.summaries.write("train", logged_step, values)
        self.pending.clear()
        elapsed = max(time.time() - self.window_start, 1e-9)
        timing = {"timing/steps_per_second": self.window_steps / elapsed,
                  "timing/tokens_per_second": self.window_tokens / elapsed}
        self.last_metrics.update(timing)
        self.summaries.write("train", step, timing)
        if print_line and self.print_fn is not None:
            steps_per_sec = timing["timing/steps_per_second"]
            seconds_left = None if self.max_train_seconds is None else (
                self.max_train_seconds - (time.time() - self.started))
            eta = monitoring.eta_seconds(steps_left=self.train_steps - step, steps_per_sec=steps_per_sec,
                                         seconds_left=seconds_left)
            self.print_fn(monitoring.progress_line(
                step=step, train_steps=self.train_steps, metrics=self.last_metrics, steps_per_sec=steps_per_sec,
                tokens_per_sec=timing["timing/tokens_per_second"], eta_seconds=eta))
        self.restart_window()


def _cpu_note(mesh) -> str:
    """' on 2 CPU devices (MTMOE_CPU_DEVICES=1 for one)' for a mesh of several CPU devices in one process."""
    import jax

    if mesh.size == 1 or jax.process_count() > 1 or mesh.devices.flat[0].platform != "cpu":
        return ""
    return f" on {mesh.size} CPU devices ({cpu_devices.ENV}=1 for one)"


def _mesh(mesh_cfg: MeshConfig):
    """The mesh `mesh_cfg` asks for (UsageError, one line, when the devices do not make it)."""
    import jax

    from mtmoe import partitioning

    devices = None
    if mesh_cfg.data_parallelism is not None:  # an explicit mesh may use fewer devices than there are
        devices = jax.devices()[:mesh_cfg.data_parallelism * mesh_cfg.expert_parallelism * mesh_cfg.model_parallelism]
    try:
        return partitioning.make_mesh(data=mesh_cfg.data_parallelism, expert=mesh_cfg.expert_parallelism,
                                      model=mesh_cfg.model_parallelism, devices=devices)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _split_error(*, model, mesh, batch_size: int, num_microbatches: int) -> str | None:
    """Why the batch or the model does not split over `mesh` (one line), or None when they do."""
    import jax

    from mtmoe import partitioning

    data_shards = mesh.shape["data"] * mesh.shape["expert"]
    if batch_size % (data_shards * num_microbatches):
        return (f"BATCH_SIZE={batch_size} does not divide over the mesh: it must be a multiple of data x expert "
                f"= {mesh.shape['data']} x {mesh.shape['expert']} = {data_shards} (x {num_microbatches} microbatches); "
                f"change --gin.BATCH_SIZE or the mesh")
    if batch_size % jax.process_count():
        return f"BATCH_SIZE={batch_size} must be a multiple of the {jax.process_count()} processes"
    try:
        partitioning.check_divisible(config=model.config, mesh=mesh, global_batch_size=batch_size // num_microbatches)
    except ValueError as err:
        return str(err)
    return None


def _checked_mesh(*, model, dataset_cfg: DatasetConfig, mesh_cfg: MeshConfig, train_steps: int,
                  checkpoint_cfg: CheckpointConfig):
    """The run's mesh, once every setting that needs neither data nor state is checked (UsageError, one line)."""
    import jax

    batch_size, num_microbatches = dataset_cfg.batch_size, mesh_cfg.num_microbatches
    for key in ("inputs", "targets"):
        if key not in dataset_cfg.task_feature_lengths:
            raise UsageError(f"TASK_FEATURE_LENGTHS lacks {key!r}; pass e.g. "
                             f"--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 64, 'targets': 64}}\"")
    if train_steps < 1 or batch_size < 1:
        raise UsageError(f"TRAIN_STEPS={train_steps} and BATCH_SIZE={batch_size} must be positive")
    if checkpoint_cfg.init_mode not in CheckpointConfig.INIT_MODES:
        raise UsageError(f"init_mode={checkpoint_cfg.init_mode!r} is unknown; use one of {CheckpointConfig.INIT_MODES}")
    mesh = _mesh(mesh_cfg)
    if jax.default_backend() == "cpu" and mesh_cfg.data_parallelism is None and jax.process_count() == 1:
        # One CPU device per core is mtmoe's choice, not the user's (mtmoe/cpu_devices.py): where the batch or
        # the model does not split over all of them, train on as many as they split over rather than fail.
        for data in range(mesh.shape["data"], 0, -1):
            candidate = _mesh(dataclasses.replace(mesh_cfg, data_parallelism=data))
            if _split_error(model=model, mesh=candidate, batch_size=batch_size,
                            num_microbatches=num_microbatches) is None:
                mesh = candidate
                break
    error = _split_error(model=model, mesh=mesh, batch_size=batch_size, num_microbatches=num_microbatches)
    if error:
        raise UsageError(error)
    return mesh


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    host_memory.apply_for_command_line()  # before JAX allocates: see mtmoe/host_memory.py
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        cpu_devices.split_cores()  # one CPU device per core, before JAX starts: see mtmoe/cpu_devices.py
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        flags, bindings = command_line.parse_command_line(argv)
        command_line.apply_process_flags(flags)  # jax.distributed, seqio's directories, absl's log level
        import gin

        import mtmoe.train as this_module  # the same module object whether run as __main__ or imported

        command_line.parse_gin(gin_files=flags.gin_file, bindings=bindings,
                               search_paths=flags.gin_search_paths.split(","))
        with gin.unlock_config():
            config_text = gin.config_str()
        if flags.run_mode == "eval":
            from mtmoe import evaluation

            result = gin.get_configurable(evaluation.evaluate)()
        elif flags.run_mode == "infer":
            from mtmoe import evaluation

            gin.get_configurable(evaluation.infer)()
            return 0
        else:
            result = gin.get_configurable(this_module.train)(config_text=config_text)
    except UsageError as err:
        print(f"error: {command_line.first_line(err)}", file=sys.stderr)
        return 2
    except ValueError as err:
        from mtmoe.checkpoints import CheckpointError

        if not isinstance(err, CheckpointError):
            raise
        print(f"error: {command_line.first_line(err)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {command_line.first_line(err)}", file=sys.stderr)
        return NONFINITE_EXIT_CODE
    except Preempted as err:
        print(command_line.first_line(err), file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_CODE
    except Exception as err:
        message = " ".join(str(err).split())
        if command_line.is_gin_call_error(message):
            print(f"error: {command_line.gin_error_line(err)}", file=sys.stderr)
            return 2
        raise
    summary = {k: round(v, 4) for k, v in result.items() if k in ("step", "loss", "accuracy", "train_seconds")
               or k.startswith("eval/")}
    print(f"done: {json.dumps(summary)}", flush=True)
    return 0


def console_main() -> None:
    """`mtmoe-train` console script."""
    sys.exit(main())


if __name__ == "__main__":
    # Run through the importable module so gin and the exception classes are the ones in mtmoe.train.
    from mtmoe.train import main as _main

    sys.exit(_main())
