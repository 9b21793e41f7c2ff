"""mtmoe.host_memory: the "retain" policy stops a freed big buffer from page-faulting again."""

import os
import subprocess
import sys

import pytest

from mtmoe import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Allocate 64 MiB, free it, allocate 64 MiB again and count the page faults of the second one.
# glibc mmaps blocks over 32 MiB afresh (so the second buffer faults in every page: 64 MiB / 2 MiB
# = 32 faults even with transparent huge pages, 16,384 with 4 KiB pages); with "retain" it comes
# from the heap the first one left, whose pages are all touched already: no fault.
PROBE = """
import resource, sys
import numpy as np
from mtmoe import host_memory
applied = host_memory.retain_freed_memory(policy=sys.argv[1])
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
first = np.ones(16 << 20, np.float32)
del first
before = faults()
second = np.ones(16 << 20, np.float32)
print(applied, faults() - before)
"""


def _probe(policy: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, policy], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(sys.platform != "linux", reason="the policy is glibc's")
def test_retain_reuses_freed_memory_without_page_faults():
    applied, faults = _probe("retain")
    assert applied
    assert faults < 8  # a few pages of the interpreter's own small objects at most
    applied, faults = _probe("system")
    assert not applied
    assert faults >= 32


def test_policy_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(host_memory.ENV, raising=False)
    assert host_memory.policy_from_env() == "retain"
    monkeypatch.setenv(host_memory.ENV, " System ")
    assert host_memory.policy_from_env() == "system"
    assert host_memory.retain_freed_memory() is False


def test_bad_policy_is_one_clear_line(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "jemalloc")
    with pytest.raises(SystemExit) as exit_info:
        host_memory.apply_for_command_line()
    message = str(exit_info.value.code)
    assert message == "error: MTMOE_MALLOC='jemalloc' is not a host memory policy; use one of retain, system"
    with pytest.raises(ValueError, match="use one of retain, system"):
        host_memory.retain_freed_memory(policy="tcmalloc")
