"""One JAX CPU device per core for training on a machine without an accelerator.

JAX gives a CPU one device. The trainer's step on it is made of many small
operations (d_model 96 in the demo), and much of the step keeps only one of the
cores busy. Two devices on two cores, the batch split between them (data
parallelism: every device runs the same step on half the rows, then the
gradients are averaged), keep both busy: the demo's whole train step took
554 ms on one device and 389 ms on two (383 ms with the experts split instead)
on a 2-core Intel Xeon, the three interleaved in one process, alone
(benchmarks/cpu_devices.py, benchmarks/results/cpu_devices.json). The settings
compute the same step; their float32 sums run in a different order, so the
losses agree to rounding, not bit for bit.

`python -m mtmoe.train` calls `split_cores()` first thing, before JAX starts
its CPU client (XLA reads its flags once, then):

- XLA_FLAGS that already holds --xla_force_host_platform_device_count wins;
- MTMOE_CPU_DEVICES=N asks for N devices (1: JAX's default of one);
- otherwise one device per core this process may run on.

On a machine with a GPU or TPU this changes nothing: JAX's default devices are
the accelerators and the CPU devices go unused. The trainer's mesh with
DATA_PARALLELISM unset takes every device; on CPU it takes as many as the
batch and the model divide over (mtmoe.train), so that an odd batch trains on
fewer devices rather than failing on a split nobody asked for.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, MutableMapping

ENV = "MTMOE_CPU_DEVICES"
FLAG = "--xla_force_host_platform_device_count"


def cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def requested_devices(environ: Mapping[str, str], *, num_cores: int) -> int | None:
    """CPU devices to create: MTMOE_CPU_DEVICES, else one per core; None when XLA_FLAGS already says.

    ValueError (one line) for an MTMOE_CPU_DEVICES that is not a positive integer.
    """
    if FLAG in environ.get("XLA_FLAGS", ""):
        return None
    value = environ.get(ENV, "").strip()
    if not value:
        return max(1, num_cores)
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{ENV}={value!r} is not a device count; set a positive integer (1: one CPU device) "
                         f"or unset it for one device per core")
    return count


def split_cores(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """Sets XLA_FLAGS for `requested_devices` CPU devices; returns the count set, or None when left alone.

    Left alone: XLA_FLAGS already sets the count, one device is asked for, or JAX
    has already started (a program that calls mtmoe.train.main from Python after
    using JAX keeps the devices it has). ValueError as requested_devices.
    """
    count = requested_devices(environ, num_cores=cores())
    if count is None or count == 1 or _jax_started():
        return None
    environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {FLAG}={count}".strip()
    return count


def _jax_started() -> bool:
    """Whether JAX has created its backends (then XLA_FLAGS is read already)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # JAX has no public call for this

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True  # cannot tell: leave the devices as they are
