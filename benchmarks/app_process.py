"""`python -m app` in a child process, started as a user starts it (for cold_start.py and web_ui_latency.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks.protocol import ROOT

# What the server logs about its start-up (app/server.py): seconds, each counted as the message says.
LOG_TIMINGS = {"loaded": re.compile(r"loaded .* in ([0-9.]+) s"),
               "serving": re.compile(r"serving .*, ([0-9.]+) s after start-up began"),
               "warmed": re.compile(r"warmed .* in ([0-9.]+) s")}
WARM_UP_FAILED = re.compile(r"warming .* failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """`python -m app --port P [--compilation-cache DIR] [--checkpoint DIR]` on a free loopback port.

    compilation_cache None: the app's default cache, as a user's server has it.

    Use as a context manager: the process starts on entry (`started`, a
    perf_counter time) and is stopped on exit. Its output goes to a file,
    read back by `log` and `log_timings`.
    """

    def __init__(self, *, checkpoint: str | None = None, compilation_cache: str | None = None, args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.command = [sys.executable, "-m", "app", "--port", str(self.port),
                        *(["--compilation-cache", compilation_cache] if compilation_cache else []),
                        *(["--checkpoint", checkpoint] if checkpoint else []), *args]
        self.process = None
        self.started = None

    def __enter__(self) -> AppProcess:
        fd, self.log_path = tempfile.mkstemp(prefix="mtmoe-app-", suffix=".log")
        os.close(fd)
        with open(self.log_path, "a") as log:  # O_APPEND: reading the file never moves where the child writes
            self.started = time.perf_counter()
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        os.unlink(self.log_path)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def log_timings(self) -> dict[str, float]:
        text = self.log()
        return {name: float(m.group(1)) for name, pattern in LOG_TIMINGS.items() if (m := pattern.search(text))}

    def wait_for_port(self, timeout: float = 300.0) -> float:
        """Seconds from the start until the server accepts connections; RuntimeError if it exits first."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"python -m app exited with status {self.process.returncode}:\n"
                                   f"{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"python -m app did not open port {self.port} within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def client(self, timeout: float = 300.0):
        """A gradio_client Client, once the server accepts connections."""
        from gradio_client import Client

        self.wait_for_port(timeout)
        return Client(self.url, verbose=False)

    def wait_for_warm_up(self, timeout: float = 600.0) -> float:
        """Waits until the server logs that its background warm-up is done; returns the seconds it logged."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if "warmed" in (timings := self.log_timings()):
                return timings["warmed"]
            if self.process.poll() is not None or WARM_UP_FAILED.search(self.log()):
                raise RuntimeError(f"python -m app's warm-up did not finish:\n{self.log()[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"python -m app's warm-up took more than {timeout:.0f} s")
