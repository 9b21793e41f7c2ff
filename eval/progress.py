"""A one-line progress bar on stderr: pairs done, sentences per second, ETA.

On a terminal the line is redrawn in place (at most every `min_interval`
seconds); in a log file one line is written per finished pair, so CI logs stay
readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """`75` -> `"1m15s"`, `3725` -> `"1h02m"`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Tracks decoding over pairs; `advance` after each batch, `finish_pair` after each pair."""

    def __init__(self, *, total_pairs: int, total_sentences: int, stream: TextIO | None = None,
                 width: int = 24, min_interval: float = 0.5, clock=time.monotonic):
        self.total_pairs, self.total_sentences = total_pairs, total_sentences
        self.stream = stream if stream is not None else sys.stderr
        self.width, self.min_interval, self.clock = width, min_interval, clock
        self.interactive = getattr(self.stream, "isatty", lambda: False)()
        self.pairs_done = self.sentences_done = 0
        self.pair = ""
        self.start = clock()
        self._last_draw = -float("inf")

    @property
    def sentences_per_second(self) -> float:
        elapsed = self.clock() - self.start
        return self.sentences_done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        fraction = self.sentences_done / self.total_sentences if self.total_sentences else 1.0
        filled = int(round(fraction * self.width))
        rate = self.sentences_per_second
        remaining = self.total_sentences - self.sentences_done
        eta = format_seconds(remaining / rate) if rate > 0 else "?"
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.pairs_done}/{self.total_pairs} pairs  "
                f"{self.sentences_done}/{self.total_sentences} sentences  {rate:.1f} sent/s  ETA {eta}  {self.pair}")

    def start_pair(self, pair: str) -> None:
        self.pair = pair
        self._draw()

    def advance(self, sentences: int) -> None:
        self.sentences_done += sentences
        self._draw()

    def finish_pair(self) -> None:
        self.pairs_done += 1
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if self.interactive:
            if force or now - self._last_draw >= self.min_interval:
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
                self._last_draw = now
        elif force:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Ends the redrawn line so later messages start on their own line."""
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """Writes one line (an error or a note) without garbling the bar."""
        prefix = "\r\x1b[K" if self.interactive else ""
        self.stream.write(prefix + text + "\n")
        self.stream.flush()
        self._last_draw = -float("inf")
