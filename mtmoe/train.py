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

This module holds `train` (gin: `train.train`) and `main`; the parts it uses:
command_line.py (flags, gin, UsageError), input_pipeline.py (seqio -> batches),
trainer.py (state layout, initialization, the jitted step), monitoring.py
(progress, summaries, SIGTERM and NaN stops), checkpoints.py, evaluation.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mtmoe import command_line, host_memory, input_pipeline, monitoring, trainer
from mtmoe.command_line import UsageError
from mtmoe.monitoring import NonFiniteLossError, Preempted, format_duration

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the run stopped early (checkpoint saved); rerun to resume
NONFINITE_EXIT_CODE = 3


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
    vocabulary = input_pipeline.vocabulary_of(mixture_or_task_name)  # also checks the task name
    pairs = input_pipeline.translation_pairs(mixture_or_task_name)
    checkpoints.check_writable(model_dir)

    # ---- state: restored, or initialized (possibly from another checkpoint) ------------------------
    lengths = {"inputs": int(task_feature_lengths["inputs"]), "targets": int(task_feature_lengths["targets"])}
    micro_batch = batch_size // num_microbatches
    input_shapes = {"encoder_input_tokens": (micro_batch, lengths["inputs"]),
                    "decoder_input_tokens": (micro_batch, lengths["targets"])}
    tx = optimizer(learning_rate=learning_rate)
    rng = jax.random.PRNGKey(seed)
    init_rng, dropout_rng = jax.random.split(rng)
    layout = trainer.state_layout(model=model, optimizer=tx, mesh=mesh, input_shapes=input_shapes, init_rng=init_rng)

    ckpt = checkpoints.Checkpointer(model_dir=model_dir, keep=keep_checkpoints)
    try:
        restored = ckpt.restore_latest(abstract_params=layout.target_params, abstract_opt_state=layout.target_opt_state)
    except checkpoints.CheckpointError as err:
        raise UsageError(str(err)) from None

    teacher = None
    if distill_teacher:
        from mtmoe import upcycling

        teacher = upcycling.load_teacher(distill_teacher)

    if restored is not None:
        params, opt_state, start_step = restored.params, restored.opt_state, restored.step
        batches_consumed = int(restored.meta.get("data", {}).get("batches_consumed", start_step))
        print_fn(f"resuming from {ckpt.directory}/{start_step} (data position: {batches_consumed} batches)")
    else:
        try:
            params, opt_state = trainer.initialize_state(
                model=model, optimizer=tx, layout=layout, mesh=mesh, input_shapes=input_shapes, init_rng=init_rng,
                init_checkpoint=init_checkpoint, init_mode=init_mode, print_fn=print_fn)
        except checkpoints.CheckpointError as err:
            raise UsageError(str(err)) from None
        start_step, batches_consumed = 0, 0

    # ---- from here on MODEL_DIR is written ------------------------------------------------------
    if process_index == 0:
        checkpoints.write_atomic(os.path.join(model_dir, "config.gin"), config_text)
    meta_static = trainer.checkpoint_meta(model=model, config_text=config_text,
                                          mixture_or_task_name=mixture_or_task_name, lengths=lengths, pairs=pairs,
                                          vocabulary=vocabulary)
    summaries = monitoring.Summaries(model_dir, enabled=process_index == 0)

    def save(step: int, consumed: int):
        meta = dict(meta_static, data={"batches_consumed": consumed, "batch_size": batch_size,
                                       "seed": data_seed if data_seed is not None else seed})
        ckpt.save(step=step, params=params, opt_state=opt_state, meta=meta)

    # ---- data -------------------------------------------------------------------------------------
    local_batch = batch_size // process_count
    pipeline_seed = data_seed if data_seed is not None else seed
    train_data = input_pipeline.BatchIterator(
        input_pipeline.make_dataset(
            mixture_or_task_name=mixture_or_task_name, task_feature_lengths=lengths, split=train_split,
            batch_size=local_batch, shuffle=True, seed=pipeline_seed, pack=pack, num_epochs=None,
            use_cached=use_cached, shard_index=process_index, num_shards=process_count,
            shuffle_buffer_size=shuffle_buffer_size),
        skip_batches=batches_consumed)

    # ---- compiled functions ------------------------------------------------------------------------
    loss_fn = None
    if teacher is not None:
        from mtmoe import upcycling

        loss_fn = upcycling.distillation_loss_fn(student=model, teacher=teacher,
                                                 teacher_weight=distill_teacher_weight)
    train_step, eval_step = trainer.compile_steps(model=model, optimizer=tx, learning_rate=learning_rate,
                                                  num_microbatches=num_microbatches, mesh=mesh, layout=layout,
                                                  loss_fn=loss_fn)

    from mtmoe.evaluation import Evaluator

    evaluator = Evaluator(
        model=model, mixture_or_task_name=mixture_or_task_name, lengths=lengths, batch_size=batch_size,
        eval_split=eval_split, eval_batches=eval_batches, pack=pack, pairs=pairs, bleu_pairs=bleu_pairs,
        bleu_examples=bleu_examples, beam_size=bleu_beam_size, vocabulary=vocabulary, mesh=mesh,
        eval_step=eval_step, process_index=process_index, process_count=process_count, print_fn=print_fn)

    # ---- the loop -----------------------------------------------------------------------------------
    stop = monitoring.StopSignal()
    healthy = jnp.asarray(True)
    step = start_step
    last_saved = start_step if restored is not None else None
    pending: list[tuple[int, Any, float]] = []  # (step, device metrics, non-padding tokens) since last log
    last_metrics: dict[str, float] = {}
    started = time.time()
    window_start, window_steps, window_tokens = time.time(), 0, 0.0
    print_fn(f"set up in {format_duration(time.time() - setup_started)} (model, checkpoint, input pipeline); "
             f"the first step also compiles and fills the input pipeline's shuffle buffers")
    print_fn(f"training {model_dir}: steps {start_step}..{train_steps}, batch {batch_size} "
             f"({num_microbatches} microbatches), mesh {dict(mesh.shape)}, {process_count} process(es), "
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
            pending.append((step, metrics, tokens))
            window_steps += 1
            window_tokens += tokens
            out_of_time = max_train_seconds is not None and time.time() - started > max_train_seconds
            stopping = monitoring.stop_requested(stop, process_count=process_count)
            due_log = step % log_every == 0 or step == train_steps or out_of_time or stopping
            due_save = step % save_every == 0 or step == train_steps or out_of_time or stopping
            if due_log or due_save:
                fetched = jax.device_get([m for _, m, _ in pending])
                for (logged_step, _, _), values in zip(pending, fetched):
                    values = {k: float(v) for k, v in values.items()}
                    monitoring.check_finite(values, step=logged_step, checkpointer=ckpt)
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
                    print_fn(monitoring.progress_line(
                        step=step, train_steps=train_steps, metrics=last_metrics, steps_per_sec=steps_per_sec,
                        tokens_per_sec=tokens_per_sec, eta_seconds=(train_steps - step) / max(steps_per_sec, 1e-9)))
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
                print_fn(f"stopping after {format_duration(time.time() - started)} "
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    host_memory.apply_for_command_line()  # before JAX allocates: see mtmoe/host_memory.py
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.ERROR)  # seqio's per-run notices drown the progress lines
    try:
        flags, bindings = command_line.parse_command_line(argv)
        if flags.multiprocess or flags.coordinator_address:
            from mtmoe import partitioning

            partitioning.initialize_distributed(coordinator_address=flags.coordinator_address,
                                                num_processes=flags.process_count, process_id=flags.process_index)
        command_line.hide_accelerators_from_tensorflow()
        import gin

        import mtmoe.train as this_module  # the same module object whether run as __main__ or imported

        command_line.import_task_registries()  # before gin locks its config: tasks/ registers gin configurables
        command_line.parse_gin(gin_files=flags.gin_file, bindings=bindings,
                               search_paths=flags.gin_search_paths.split(","))
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
