"""Proposed fixes to model code owned by other helpers, applied by monkeypatching so
that the benchmarks can measure them before they land (see BENCHMARKS.md).

`apply(name)` installs one; each is a drop-in replacement with the same
signature and the same values (checked by `check_*` below).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


# ---------------------------------------------------------------------------
# 1. Cross-entropy with a hand-written gradient (as T5X's cross_entropy_with_logits)
# ---------------------------------------------------------------------------
# mtmoe.models.cross_entropy_with_logits picks the target log-prob with
# take_along_axis; its transpose is a scatter into a zero [B, T, V] buffer, which
# XLA:CPU fuses with the softmax gradient into one loop that writes dlogits
# transposed ([V, B*T]) -- the most expensive op of the tiny model's train step.
# The custom VJP below writes (softmax * (1 + 2 z log_z) - onehot) * g directly.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _xent(logits, targets, z_loss):
    return _xent_fwd(logits, targets, z_loss)[0]


def _xent_fwd(logits, targets, z_loss):
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [B, T]
    z_term = z_loss * jnp.square(log_z)
    return (log_z - target_logit + z_term, z_term), (logits, targets, log_z)


def _xent_bwd(z_loss, residuals, cotangents):
    logits, targets, log_z = residuals
    g_total, g_z = cotangents  # [B, T] each
    probs = jnp.exp(logits - log_z[..., None])  # [B, T, V]
    scale = g_total * (1.0 + 2.0 * z_loss * log_z) + g_z * 2.0 * z_loss * log_z  # [B, T]
    onehot = targets[..., None] == jnp.arange(logits.shape[-1], dtype=targets.dtype)  # [B, T, V]
    dlogits = scale[..., None] * probs - jnp.where(onehot, g_total[..., None], 0.0)
    return dlogits.astype(logits.dtype), None


_xent.defvjp(_xent_fwd, _xent_bwd)


def cross_entropy_with_logits(logits, targets, *, z_loss: float, label_smoothing: float = 0.0):
    """Same contract as mtmoe.models.cross_entropy_with_logits, custom VJP without label smoothing."""
    if label_smoothing > 0.0:
        return _ORIGINAL["cross_entropy"](logits, targets, z_loss=z_loss, label_smoothing=label_smoothing)
    return _xent(logits, targets, float(z_loss))


_ORIGINAL: dict = {}


def apply(name: str) -> None:
    """Installs patch `name` ("xent") into the imported mtmoe modules."""
    from mtmoe import models

    if name == "xent":
        _ORIGINAL.setdefault("cross_entropy", models.cross_entropy_with_logits)
        models.cross_entropy_with_logits = cross_entropy_with_logits
    else:
        raise ValueError(f"unknown patch {name!r}; use 'xent'")


def check_xent() -> float:
    """Max abs difference of value and gradient against the original (should be ~1e-6)."""
    from mtmoe import models

    original = _ORIGINAL.get("cross_entropy", models.cross_entropy_with_logits)
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 7)) * 3.0
    targets = jnp.array([[1, 2, 6], [0, 5, 3]], jnp.int32)

    def total(fn, x):
        loss, z = fn(x, targets, z_loss=1e-2)
        return jnp.sum(loss * jnp.arange(1.0, 7.0).reshape(2, 3)) + 3.0 * jnp.sum(z)

    a, ga = jax.value_and_grad(lambda x: total(original, x))(logits)
    b, gb = jax.value_and_grad(lambda x: total(cross_entropy_with_logits, x))(logits)
    return float(max(jnp.abs(a - b), jnp.max(jnp.abs(ga - gb))))
