"""Learning-rate schedules: values derived by hand from their formulas."""

import numpy as np
import pytest

from mtmoe import optimizers


def test_rsqrt_is_constant_through_warmup_then_decays():
    schedule = optimizers.rsqrt_schedule(base_learning_rate=0.5, warmup_steps=100)
    # 0.5 / sqrt(100) = 0.05 up to step 100; 0.5 / sqrt(400) = 0.025.
    np.testing.assert_allclose([schedule(0), schedule(100), schedule(400)], [0.05, 0.05, 0.025], rtol=1e-6)


def test_cooldown_scales_the_last_steps_down_to_zero():
    schedule = optimizers.rsqrt_schedule(base_learning_rate=0.5, warmup_steps=100, cooldown_steps=200,
                                         total_steps=400)
    # Untouched before step 200; at 300, half of 0.5 / sqrt(300); 0 at 400 and after.
    np.testing.assert_allclose([schedule(200), schedule(300), schedule(400), schedule(450)],
                               [0.5 / np.sqrt(200), 0.5 * 0.5 / np.sqrt(300), 0.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("cooldown, total", [(-1, 100), (10, None), (200, 100)])
def test_bad_cooldown_says_which_macro(cooldown, total):
    with pytest.raises(ValueError, match="COOLDOWN_STEPS"):
        optimizers.rsqrt_schedule(cooldown_steps=cooldown, total_steps=total)
