"""Optimizers and learning-rate schedules for the trainer (T5X defaults).

T5X trains T5/mT5/Switch with Adafactor (factored second moments, update
clipping 1.0, parameter-scale relative steps, decay 0.8) and the
"constant * rsqrt_decay" schedule: lr(step) = base / sqrt(max(step, warmup)),
constant for the first `warmup_steps` steps, then decaying as 1/sqrt(step).
AdamW with linear warmup and the same rsqrt decay is the option for those who
prefer it. Everything here is keyword-only plain Python; gin binds it in
gin/runs/*.gin.

Optimizer state sharding follows the parameters: a state leaf with a
parameter's shape takes that parameter's sharding; Adafactor's factored row /
column statistics (the parameter's shape with the last or second-to-last axis
dropped) take the parameter's spec with that axis dropped.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

Schedule = Callable[[jax.Array], jax.Array]


def rsqrt_schedule(*, base_learning_rate: float = 1.0, warmup_steps: int = 10_000,
                   linear_warmup: bool = False, cooldown_steps: int = 0, total_steps: int | None = None) -> Schedule:
    """T5X's `constant * rsqrt_decay`: base / sqrt(max(step, warmup_steps)).

    With linear_warmup=True the first warmup_steps ramp linearly from 0 to the
    plateau (useful for Adam, which has no relative step size). With
    cooldown_steps > 0 the last cooldown_steps before total_steps are scaled
    down linearly to 0 at total_steps (a short run ends on a small step size,
    as a long rsqrt run does by itself)."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}; set --gin.WARMUP_STEPS")
    if cooldown_steps < 0 or (cooldown_steps and (total_steps is None or not 0 < cooldown_steps <= total_steps)):
        raise ValueError(f"cooldown_steps={cooldown_steps} must be >= 0 and, when > 0, at most total_steps="
                         f"{total_steps}; set --gin.COOLDOWN_STEPS (0 = none)")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        lr = base_learning_rate / jnp.sqrt(jnp.maximum(step, warmup_steps))
        if linear_warmup:
            lr = lr * jnp.minimum(1.0, (step + 1.0) / warmup_steps)
        if cooldown_steps:
            lr = lr * jnp.clip((total_steps - step) / cooldown_steps, 0.0, 1.0)
        return lr

    return schedule


def constant_schedule(*, value: float) -> Schedule:
    """A constant learning rate (T5X's fine-tuning default: 1e-3 with Adafactor)."""
    return lambda step: jnp.full((), value, jnp.float32)


def adafactor(*, learning_rate: Schedule | float, decay_rate: float = 0.8,
              clipping_threshold: float | None = 1.0, multiply_by_parameter_scale: bool = True,
              min_dim_size_to_factor: int = 128, weight_decay_rate: float | None = None,
              global_norm_clip: float | None = None) -> optax.GradientTransformation:
    """Adafactor as T5X configures it (optax's implementation)."""
    tx = optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                         clipping_threshold=clipping_threshold,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         min_dim_size_to_factor=min_dim_size_to_factor,
                         weight_decay_rate=weight_decay_rate)
    if global_norm_clip:
        tx = optax.chain(optax.clip_by_global_norm(global_norm_clip), tx)
    return tx


def adamw(*, learning_rate: Schedule | float, b1: float = 0.9, b2: float = 0.98,
          eps: float = 1e-9, weight_decay: float = 0.0,
          global_norm_clip: float | None = 1.0) -> optax.GradientTransformation:
    """AdamW with optional global-norm clipping."""
    tx = optax.adamw(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if global_norm_clip:
        tx = optax.chain(optax.clip_by_global_norm(global_norm_clip), tx)
    return tx


def _spec_for_state_leaf(shape: tuple[int, ...], candidates: list[tuple[tuple[int, ...], PartitionSpec]]) -> PartitionSpec:
    """Sharding spec of one optimizer-state leaf from the parameter it tracks."""
    for param_shape, spec in candidates:
        axes = tuple(spec) + (None,) * (len(param_shape) - len(tuple(spec)))
        if shape == param_shape:
            return PartitionSpec(*axes)
        if len(param_shape) >= 2 and len(shape) == len(param_shape) - 1:
            if shape == param_shape[:-1]:                       # Adafactor row statistics
                return PartitionSpec(*axes[:-1])
            if shape == param_shape[:-2] + param_shape[-1:]:    # Adafactor column statistics
                return PartitionSpec(*(axes[:-2] + axes[-1:]))
    return PartitionSpec()


def optimizer_state_shardings(*, abstract_opt_state: Any, abstract_params: Any, param_shardings: Any,
                              mesh: jax.sharding.Mesh) -> Any:
    """NamedShardings for an optimizer state (a tree of ShapeDtypeStructs).

    Each state leaf is matched to the parameter whose key path is a suffix of
    the leaf's key path (optax nests per-parameter trees inside its states);
    scalars (step counts) and unmatched leaves are replicated."""
    params_by_path: dict[tuple[str, ...], tuple[tuple[int, ...], PartitionSpec]] = {}
    flat_params = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    flat_shardings = jax.tree_util.tree_leaves(param_shardings)
    for (path, leaf), sharding in zip(flat_params, flat_shardings, strict=True):
        params_by_path[_path_names(path)] = (tuple(leaf.shape), sharding.spec)

    def leaf_sharding(path, leaf):
        names = _path_names(path)
        matched = [params_by_path[names[start:]] for start in range(len(names)) if names[start:] in params_by_path]
        return NamedSharding(mesh, _spec_for_state_leaf(tuple(leaf.shape), matched[:1]))

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_opt_state)


def _path_names(path) -> tuple[str, ...]:
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
    return tuple(names)
