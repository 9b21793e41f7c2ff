"""Host memory policy for long-running processes: keep freed memory for reuse (glibc).

XLA:CPU allocates every output buffer and its scratch arena afresh at each call
of a compiled step and frees them afterwards. glibc serves any block over its
mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on free, so
each step page-faults its big buffers in again, and the train step spends a
large share of its time in those faults (the figures are in benchmarks/results/moe_layer.json;
`benchmarks/moe_layer.py --malloc system,retain` measures them). Training, evaluation and the web UI reach their
peak memory in the first step and stay there, so keeping the freed memory
costs nothing they did not already need; the process just never hands it back
to the kernel.

`retain_freed_memory()` is called first thing by the entry points
(`python -m mtmoe.train`, `eval/per_language_bleu.py`,
`python -m app`), before JAX starts its threads. Set MTMOE_MALLOC=system to
keep glibc's defaults. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

ENV = "MTMOE_MALLOC"
POLICIES = ("retain", "system")
# glibc <malloc.h> mallopt parameters.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = {
    "M_MMAP_MAX": (M_MMAP_MAX, 0),  # large blocks from the heap, not from a fresh mmap
    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, -1),  # never give the heap's free top back (-1: no trimming)
    "M_ARENA_MAX": (M_ARENA_MAX, 1),  # one arena: XLA's threads reuse what any thread freed
}


def policy_from_env() -> str:
    """The policy MTMOE_MALLOC asks for ("retain" when unset); ValueError for another value."""
    value = os.environ.get(ENV, "retain").strip().lower() or "retain"
    if value not in POLICIES:
        raise ValueError(f"{ENV}={value!r} is not a host memory policy; use one of {', '.join(POLICIES)}")
    return value


def retain_freed_memory(*, policy: str | None = None) -> bool:
    """Apply the "retain" policy to this process's glibc malloc; returns whether it was applied.

    policy: "retain" or "system" (default: from MTMOE_MALLOC). Call before JAX
    allocates: the arena setting only binds threads that start later.
    """
    policy = policy or policy_from_env()
    if policy not in POLICIES:
        raise ValueError(f"host memory policy {policy!r}: use one of {', '.join(POLICIES)}")
    if policy == "system" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    for name, (option, value) in SETTINGS.items():
        if libc.mallopt(option, value) != 1:
            log.warning("mallopt(%s, %d) failed; keeping glibc's default for it", name, value)
            return False
    return True


def apply_for_command_line() -> None:
    """retain_freed_memory() for a command-line entry point: a bad MTMOE_MALLOC exits with one line."""
    try:
        retain_freed_memory()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
