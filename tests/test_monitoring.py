"""mtmoe.monitoring: the progress line, the NaN stop's message, SIGTERM as a flag."""

import os
import signal

import pytest

from mtmoe import monitoring


def test_format_duration():
    assert monitoring.format_duration(552) == "9m12s"
    assert monitoring.format_duration(3900) == "1h05m"
    assert monitoring.format_duration(-3) == "0m00s"


def test_eta_stops_at_the_time_limit():
    # make demo: 2,000 steps at 0.64 steps/s would take 52 minutes, but the run stops at its 10-minute limit.
    assert monitoring.eta_seconds(steps_left=2000, steps_per_sec=0.64) == 3125.0
    assert monitoring.eta_seconds(steps_left=2000, steps_per_sec=0.64, seconds_left=600 - 90) == 510.0
    assert monitoring.eta_seconds(steps_left=10, steps_per_sec=2.0, seconds_left=510) == 5.0  # the steps end first
    assert monitoring.eta_seconds(steps_left=10, steps_per_sec=2.0, seconds_left=-3) == 0.0  # over the limit


def test_progress_line_shows_expert_metrics_only_for_moe():
    dense = {"loss": 4.2134, "accuracy": 0.231, "learning_rate": 0.01}
    line = monitoring.progress_line(step=120, train_steps=3000, metrics=dense, steps_per_sec=5.2,
                                    tokens_per_sec=10_400, eta_seconds=552)
    assert line == "step 120/3000 loss 4.213 acc 23.1% lr 1.0e-02 | 5.20 steps/s 10.4k tok/s ETA 9m12s"
    moe = dict(dense, **{"experts/auxiliary_loss": 1.013, "experts/fraction_tokens_left_behind": 0.003,
                         "experts/router_confidence": 0.5})
    line = monitoring.progress_line(step=120, train_steps=3000, metrics=moe, steps_per_sec=5.2,
                                    tokens_per_sec=10_400, eta_seconds=552)
    assert line.endswith("ETA 9m12s | experts aux 1.01 drop 0.3% conf 0.50")


class _Checkpointer:
    directory = "/runs/x/checkpoints"

    def __init__(self, latest):
        self.latest = latest

    def latest_step(self):
        return self.latest


def test_check_finite_names_the_last_good_checkpoint():
    finite = {"loss": 3.0, "grad_norm": 1.0, "param_norm": 10.0}
    monitoring.check_finite(finite, step=7, checkpointer=_Checkpointer(6))  # no error
    with pytest.raises(monitoring.NonFiniteLossError) as info:
        monitoring.check_finite(dict(finite, loss=float("nan")), step=7, checkpointer=_Checkpointer(6))
    message = str(info.value)
    assert "loss became NaN at step 7" in message and "Last good checkpoint: /runs/x/checkpoints/6" in message
    assert len(message.splitlines()) == 1
    with pytest.raises(monitoring.NonFiniteLossError, match="non-finite at step 2.*none was saved yet"):
        monitoring.check_finite(dict(finite, grad_norm=float("inf")), step=2, checkpointer=_Checkpointer(None))


def test_sigterm_becomes_a_flag_until_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop = monitoring.StopSignal()
    try:
        assert not monitoring.stop_requested(stop, process_count=1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM" and monitoring.stop_requested(stop, process_count=1)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before
