"""Watching a running train loop: what it reports, and the two ways it stops early.

- Reports: `progress_line` (one line a person can follow) and `Summaries`
  (TensorBoard event files in MODEL_DIR/{train,eval} and every record in
  MODEL_DIR/metrics.jsonl, written by process 0 only).
- Preemption: `StopSignal` turns SIGTERM / SIGINT into a flag the loop reads
  after each step; `stop_requested` makes every process agree on it, so all of
  them save the same step before raising `Preempted`.
- Divergence: `check_finite` raises `NonFiniteLossError` naming the last good
  checkpoint when a logged step's loss, gradient norm or parameter norm is NaN
  or Inf (the jitted step already left the state unchanged from then on).
"""

from __future__ import annotations

import json
import math
import os
import signal
from typing import Any, Mapping

import numpy as np


class NonFiniteLossError(RuntimeError):
    """The loss (or the update) became NaN/Inf; the message names the last good checkpoint."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved."""


def format_duration(seconds: float) -> str:
    """'9m12s', or '1h05m' from an hour on."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def eta_seconds(*, steps_left: int, steps_per_sec: float, seconds_left: float | None = None) -> float:
    """Seconds until the run stops: at its last step or at its time limit (max_train_seconds),
    whichever comes first. `seconds_left` is the limit minus the time already spent; None: no limit."""
    eta = steps_left / max(steps_per_sec, 1e-9)
    return eta if seconds_left is None else min(eta, max(seconds_left, 0.0))


def progress_line(*, step: int, train_steps: int, metrics: Mapping[str, float], steps_per_sec: float,
                  tokens_per_sec: float, eta_seconds: float) -> str:
    """One line a person can follow, e.g.
    'step 120/3000 loss 4.213 acc 23.1% lr 1.0e-02 | 5.2 steps/s 10.4k tok/s ETA 9m12s | experts aux 1.01 drop 0.3%'."""
    line = (f"step {step}/{train_steps} loss {metrics['loss']:.3f} acc {100 * metrics.get('accuracy', 0):.1f}% "
            f"lr {metrics.get('learning_rate', 0):.1e} | {steps_per_sec:.2f} steps/s "
            f"{tokens_per_sec / 1000:.1f}k tok/s ETA {format_duration(eta_seconds)}")
    if "experts/auxiliary_loss" in metrics:
        line += (f" | experts aux {metrics['experts/auxiliary_loss']:.2f} "
                 f"drop {100 * metrics.get('experts/fraction_tokens_left_behind', 0):.1f}% "
                 f"conf {metrics.get('experts/router_confidence', 0):.2f}")
    return line


class Summaries:
    """TensorBoard (tensorboardX) writers in MODEL_DIR/{train,eval} and MODEL_DIR/metrics.jsonl."""

    def __init__(self, model_dir: str, *, enabled: bool):
        self.enabled = enabled
        self._writers: dict[str, Any] = {}
        self.model_dir = model_dir
        self._jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a") if enabled else None

    def write(self, kind: str, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        if kind not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[kind] = SummaryWriter(os.path.join(self.model_dir, kind))
        writer = self._writers[kind]
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
        writer.flush()
        self._jsonl.write(json.dumps({"kind": kind, "step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        if self._jsonl:
            self._jsonl.close()



class StopSignal:
    """Turns SIGTERM (and Ctrl-C) into a flag the loop checks after each step."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def stop_requested(stop: StopSignal, *, process_count: int) -> bool:
    """True on every process when any process got a stop signal (they must save the same step)."""
    flag = stop.received is not None
    if process_count == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def check_finite(values: Mapping[str, float], *, step: int, checkpointer) -> None:
    """NonFiniteLossError (one line naming the last good checkpoint) unless loss and norms are finite.

    values: a logged step's metrics as floats; checkpointer: the run's
    `checkpoints.Checkpointer`, asked for its latest step only on failure."""
    if all(math.isfinite(values[k]) for k in ("loss", "grad_norm", "param_norm")):
        return
    good = checkpointer.latest_step()
    where = f"{checkpointer.directory}/{good}" if good is not None else "none was saved yet"
    raise NonFiniteLossError(
        f"loss became {'NaN' if math.isnan(values['loss']) else 'non-finite'} at step "
        f"{step} (loss={values['loss']}, grad_norm={values['grad_norm']}); training "
        f"stopped. Last good checkpoint: {where}. Lower the learning rate or check the data, "
        f"then rerun to resume from it")
