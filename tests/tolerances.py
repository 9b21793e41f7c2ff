"""Tolerances for float32 results that were summed in a different order.

Two float32 computations of the same math (one device against eight, a cached
decode step against the full sequence, a loop over experts against one einsum)
add the same numbers in different orders. A reordered sum of `terms` addends
moves by about sqrt(terms) roundings (a random walk of eps32 steps) of the size
of what was added, not of the result: an element that cancels to nearly zero
keeps the error of its large addends. So the tolerance scales with the largest
magnitude in the reference, never with each element, and a fixed atol (1e-6)
is wrong both ways: too tight next to values near 10, blind to values near 1e-7.

    assert_close_float32(sharded, single, terms=48)  # 48 tokens summed in another order
"""

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23: one rounding of a float32 near 1

# The forward comparisons in tests/ measure at most 2 eps32 * max|expected| with
# terms >= 6 (c <= 0.8): 4 leaves them 5x margin.
SAFETY = 4.0


def float32_atol(expected, *, terms: int, safety: float = SAFETY) -> float:
    """safety * eps32 * sqrt(terms) * max|expected|: the absolute tolerance for a float32
    `expected` whose sums of `terms` addends ran in another order."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return safety * EPS32 * math.sqrt(terms) * scale


def assert_close_float32(actual, expected, *, terms: int, safety: float = SAFETY, err_msg: str = "") -> None:
    """assert_allclose with atol = float32_atol(expected, ...) and no rtol (see the module docstring)."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=0.0,
        atol=float32_atol(expected, terms=terms, safety=safety),
        err_msg=err_msg,
    )
