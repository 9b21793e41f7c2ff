"""Start a model from another one: sparse upcycling, distillation into a dense student.

Three ways `train(init_checkpoint=..., init_mode=...)` fills fresh parameters
from a checkpoint directory (its newest readable step):

- "params":  the same architecture; every parameter is copied (fine-tuning).
- "upcycle": dense -> MoE (Komatsuzaki et al. 2022, "Sparse Upcycling"). Every
  parameter with the same path and shape is copied; each MoE layer's experts
  `<layer>/moe/{wi_0, wi_1, wo}` [E, ...] get E copies of the dense layer's
  `<layer>/mlp/{wi_0, wi_1, wo}`; routers keep their fresh initialisation and
  the optimizer state starts fresh.
- "student": MoE teacher -> dense student (Switch section 4): the non-expert
  weights (embeddings, attention, norms, dense MLPs, logits) are copied; the
  student's MLPs where the teacher had experts keep their fresh initialisation.

Distillation (`train(distill_teacher=DIR)`): the loss is
(1 - w) * cross-entropy with the ground truth + w * cross-entropy with the
teacher's probabilities, w = 0.25 as in the Switch paper (Table 6).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mtmoe import checkpoints, network


@dataclasses.dataclass
class Teacher:
    model: Any
    params: Any


def _load(model_dir: str):
    from mtmoe import translate

    translator = translate.Translator.from_checkpoint(model_dir)
    return translator.model, translator.params


def load_teacher(model_dir: str) -> Teacher:
    """The teacher model and its parameters (on one device) from a checkpoint directory."""
    model, params = _load(model_dir)
    return Teacher(model=model, params=params)


def _flat(tree) -> dict[str, Any]:
    return {checkpoints.path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def initialize_from(model_dir: str, *, mode: str, params: Any, param_shardings: Any,
                    print_fn: Callable[[str], None] = print) -> Any:
    """`params` (freshly initialised, sharded) with values taken from `model_dir` as `mode` says."""
    _, source_params = _load(model_dir)
    source = {k: np.asarray(v) for k, v in _flat(jax.device_get(source_params)).items()}
    target_flat = _flat(params)
    if mode == "params":
        checkpoints.check_architecture(expected={k: list(v.shape) for k, v in target_flat.items()},
                                       found={k: list(v.shape) for k, v in source.items()}, where=model_dir)
    copied, broadcast, fresh = 0, 0, []
    new_values = {}
    for path, leaf in target_flat.items():
        shape = tuple(leaf.shape)
        if path in source and source[path].shape == shape:
            new_values[path] = source[path]
            copied += 1
            continue
        dense_path = path.replace("/moe/", "/mlp/")
        if mode == "upcycle" and "/moe/" in path and dense_path in source and source[dense_path].shape == shape[1:]:
            new_values[path] = np.broadcast_to(source[dense_path], shape).copy()  # [E, ...] E copies
            broadcast += 1
            continue
        fresh.append(path)
    if mode == "upcycle" and broadcast == 0:
        raise checkpoints.CheckpointError(
            f"nothing to upcycle from {model_dir}: no dense MLP matches an expert layer of this model; "
            f"upcycle a dense checkpoint of the same width into an MoE gin model")
    print_fn(f"initialised from {model_dir} ({mode}): {copied} tensors copied, {broadcast} expert tensors from "
             f"dense MLPs, {len(fresh)} fresh ({', '.join(fresh[:3])}{', ...' if len(fresh) > 3 else ''})")
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    treedef = jax.tree_util.tree_structure(params)
    values = [new_values.get(checkpoints.path_name(p), leaf) for p, leaf in leaves_with_path]
    return jax.device_put(jax.tree_util.tree_unflatten(treedef, values), param_shardings)


def distillation_loss_fn(*, student, teacher: Teacher, teacher_weight: float = 0.25):
    """loss_fn(params, batch, dropout_rng) -> (loss, metrics) for a student distilled from `teacher`.

    loss = (1 - teacher_weight) * student.loss_fn (ground truth, with its z-loss
    and auxiliary losses) + teacher_weight * mean over target tokens of
    -sum_v p_teacher(v) log p_student(v). The teacher runs without dropout, in its
    training dtype, routing drop-free; its parameters are constants of the step."""
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"distill_teacher_weight={teacher_weight} must be in [0, 1]")
    teacher_params = teacher.params
    teacher_module = network.Transformer(teacher.model.config.for_inference(eval_capacity="drop_free"))

    def loss_fn(params, batch, dropout_rng):
        ground_loss, metrics = student.loss_fn(params, batch, dropout_rng)
        kwargs = {k: batch[k] for k in ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
                                        "decoder_positions") if k in batch}
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        student_logits = student.module.apply(
            {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            decoder_target_tokens=batch["decoder_target_tokens"], enable_dropout=dropout_rng is not None,
            rngs=rngs, **kwargs)  # [B, T, V]
        teacher_logits = teacher_module.apply(
            {"params": teacher_params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            decoder_target_tokens=batch["decoder_target_tokens"], **kwargs)  # [B, T, V]
        teacher_probs = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
        soft = -jnp.sum(teacher_probs * jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1), axis=-1)
        weights = batch["decoder_loss_weights"].astype(jnp.float32)  # [B, T]
        soft_loss = jnp.sum(soft * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        loss = (1.0 - teacher_weight) * ground_loss + teacher_weight * soft_loss
        return loss, dict(metrics, loss=loss, ground_truth_loss=ground_loss, distill_loss=soft_loss)

    return loss_fn
