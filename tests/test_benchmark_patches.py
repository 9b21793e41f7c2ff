"""benchmarks/patches.py: the "before" cross-entropy equals the committed one and really is the old code."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import patches
from mtmoe import models


def _gradient_primitives(fn) -> str:
    logits = jnp.ones((2, 3, 7))  # [B, T, V]
    targets = jnp.zeros((2, 3), jnp.int32)
    return str(jax.make_jaxpr(jax.grad(lambda x: fn(x, targets, z_loss=1e-2)[0].sum()))(logits))


def test_xent_autodiff_equals_the_committed_loss():
    assert patches.check_xent_autodiff() <= patches.TOLERANCE


def test_xent_autodiff_is_the_scatter_gradient_the_committed_code_removed():
    # The autodiff of take_along_axis is a scatter into a zero [B, T, V] buffer: the
    # op the committed custom VJP avoids. A "before" without it measures nothing.
    assert "scatter" in _gradient_primitives(patches.cross_entropy_autodiff)
    assert "scatter" not in _gradient_primitives(models.cross_entropy_with_logits)


def test_apply_and_restore():
    committed = models.cross_entropy_with_logits
    try:
        patches.apply("xent_autodiff")
        assert models.cross_entropy_with_logits is patches.cross_entropy_autodiff
    finally:
        patches.restore()
    assert models.cross_entropy_with_logits is committed
    with pytest.raises(ValueError, match="use 'xent_autodiff'"):
        patches.apply("xent")
