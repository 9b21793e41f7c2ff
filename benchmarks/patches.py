"""Slower variants of model code, monkeypatched in so a benchmark can show what the committed code saves.

`apply(name)` installs one into the imported mtmoe modules (before anything is
traced: jitted functions look the patched name up when they are traced), after
checking that it computes the same values and gradients as the committed code;
`restore()` puts the committed functions back. Not imported by the library.

    xent_autodiff  mtmoe.models.cross_entropy_with_logits written as
                   logsumexp + take_along_axis, gradient by autodiff.
                   The committed version has a hand-written VJP, as T5X's;
                   benchmarks/mfu.py times both side by side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ---------------------------------------------------------------------------
# xent_autodiff: the cross-entropy with an autodiff gradient
# ---------------------------------------------------------------------------
# The automatic gradient of take_along_axis is a scatter into a zero [B, T, V]
# buffer, which XLA:CPU fuses with the softmax gradient into one loop writing
# dlogits transposed ([V, B*T]): the most expensive op of the tiny model's train
# step (benchmarks/mfu.py). The committed custom VJP
# writes (softmax * (1 + 2 z log_z) - onehot) * g directly.


def cross_entropy_autodiff(logits, targets, *, z_loss: float, label_smoothing: float = 0.0):
    """mtmoe.models.cross_entropy_with_logits with an autodiff gradient (same contract).

    logits: <float32>[B, T, V]; targets: <int32>[B, T]. Returns (<float32>[B, T]
    cross-entropy + z-loss, <float32>[B, T] z-loss). Label smoothing is plain
    autodiff in both: it goes to the committed function unchanged."""
    if label_smoothing != 0.0:
        return _committed_cross_entropy()(logits, targets, z_loss=z_loss, label_smoothing=label_smoothing)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
    log_probs = logits - log_z[..., None]  # [B, T, V]
    target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, T]
    z_term = z_loss * jnp.square(log_z)  # [B, T]
    return -target_log_prob + z_term, z_term


_COMMITTED: dict = {}
TOLERANCE = 1e-5  # float32 on O(1) values: the two differ by rounding only (measured ~5e-7)


def _committed_cross_entropy():
    from mtmoe import models

    return _COMMITTED.setdefault("cross_entropy", models.cross_entropy_with_logits)


def check_xent_autodiff() -> float:
    """Max abs difference of value and gradient (w.r.t. logits) between xent_autodiff and the committed code.

    Both outputs (total and z-loss) carry weights, so the z-loss cotangent path
    is checked too; [2, 3, 7] logits at scale 3, z_loss 1e-2."""
    committed = _committed_cross_entropy()
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 7)) * 3.0  # [B, T, V]
    targets = jnp.array([[1, 2, 6], [0, 5, 3]], jnp.int32)  # [B, T]

    def total(fn, x):
        loss, z = fn(x, targets, z_loss=1e-2)
        return jnp.sum(loss * jnp.arange(1.0, 7.0).reshape(2, 3)) + 3.0 * jnp.sum(z)

    a, grad_a = jax.value_and_grad(lambda x: total(committed, x))(logits)
    b, grad_b = jax.value_and_grad(lambda x: total(cross_entropy_autodiff, x))(logits)
    return float(max(jnp.abs(a - b), jnp.max(jnp.abs(grad_a - grad_b))))


def apply(name: str) -> None:
    """Installs the earlier version `name` ("xent_autodiff") after checking it equals the committed code."""
    from mtmoe import models

    if name != "xent_autodiff":
        raise ValueError(f"unknown patch {name!r}; use 'xent_autodiff'")
    difference = check_xent_autodiff()
    if not difference <= TOLERANCE:
        raise RuntimeError(f"xent_autodiff differs from mtmoe.models.cross_entropy_with_logits by {difference:.2e} "
                           f"(> {TOLERANCE}); update benchmarks/patches.py to the committed loss's contract")
    models.cross_entropy_with_logits = cross_entropy_autodiff


def restore() -> None:
    """Puts the committed functions back (a no-op when nothing was applied)."""
    from mtmoe import models

    if "cross_entropy" in _COMMITTED:
        models.cross_entropy_with_logits = _COMMITTED["cross_entropy"]
