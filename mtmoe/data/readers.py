"""Readers of the corpus files: lenient streams for training, strict lines for evaluation.

Training (`read_tsv`, `read_aligned`) streams lines from plain or gzip files
and skips bad input instead of failing: an empty line, a TSV line without
enough tab-separated columns, a line that is not valid UTF-8, a line longer
than `max_line_bytes`, a pair with an empty side, and (for line-aligned files)
lines of one file that the other lacks. Skipped lines are counted per file and
reason; the counts of the last complete pass over a file are in
`bad_line_counts()` and logged once per file.

Evaluation (`numbered_lines`) must not score a silently shortened test set:
it yields every line with its number and raises `DataError`, one line naming
the file and what to fix, for a file it cannot read or decode.
"""

from __future__ import annotations

import collections
import gzip
import logging
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

MAX_LINE_BYTES = 20_000  # ~100x a long sentence; longer lines are markup dumps, not text

_lock = threading.Lock()
_bad_lines: dict[str, collections.Counter] = {}  # path -> reason -> count (last full pass)
_logged: set[str] = set()


def bad_line_counts(path: str | os.PathLike | None = None) -> dict:
    """Skipped lines per file and reason, from the last complete pass over each file.

    bad_line_counts() -> {"/data/en-de.tsv.gz": {"empty": 1, "no_tab": 2}, ...};
    bad_line_counts(path) -> {"empty": 1, "no_tab": 2} ({} when none or not read yet).
    """
    with _lock:
        if path is not None:
            return dict(_bad_lines.get(os.fspath(path), {}))
        return {file: dict(counts) for file, counts in _bad_lines.items() if counts}


def _record(path: str, counts: collections.Counter) -> None:
    with _lock:
        _bad_lines[path] = counts
        first_time = path not in _logged
        _logged.add(path)
    if counts and first_time:
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
        logging.warning(
            "skipped %d bad lines in %s (%s); mtmoe.data.readers.bad_line_counts() has them",
            sum(counts.values()),
            path,
            summary,
        )


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _lines(handle, counts: collections.Counter, *, max_line_bytes: int) -> Iterator[str | None]:
    """Decoded lines without their newline; None for a line that was skipped."""
    while True:
        raw = handle.readline(max_line_bytes + 1)
        if not raw:
            return
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # drop the rest of the line in bounded reads
                raw = handle.readline(1 << 20)
            counts["too_long"] += 1
            yield None
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            counts["invalid_utf8"] += 1
            yield None
            continue
        yield text.rstrip("\r\n")


def read_tsv(
    path: str, *, columns: Sequence[int] = (0, 1), max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[str, ...]]:
    """Yields the stripped `columns` of each good line of a TSV file (plain or .gz)."""
    path = os.fspath(path)
    counts = collections.Counter()
    needed = max(columns) + 1
    with _open(path) as handle:
        for line in _lines(handle, counts, max_line_bytes=max_line_bytes):
            if line is None:
                continue
            if not line.strip():
                counts["empty"] += 1
                continue
            cells = line.split("\t")
            if len(cells) < needed:
                counts["no_tab"] += 1
                continue
            values = tuple(cells[column].strip() for column in columns)
            if not all(values):
                counts["empty_side"] += 1
                continue
            yield values
    _record(path, counts)


def read_aligned(paths: Sequence[str], *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[str, ...]]:
    """Yields tuples of line i of each file (OPUS-100, FLORES-200 layouts).

    Counts go to the first path; lines past the end of the shorter file are
    counted as "unaligned".
    """
    paths = [os.fspath(path) for path in paths]
    counts = collections.Counter()
    handles = [_open(path) for path in paths]
    try:
        streams = [_lines(handle, counts, max_line_bytes=max_line_bytes) for handle in handles]
        for lines in _zip_longest(streams):
            if any(line is _MISSING for line in lines):
                counts["unaligned"] += 1
                continue
            if any(line is None for line in lines):
                continue  # already counted by _lines
            values = tuple(line.strip() for line in lines)
            if not all(values):
                counts["empty"] += 1
                continue
            yield values
    finally:
        for handle in handles:
            handle.close()
    _record(paths[0], counts)


_MISSING = object()


def _zip_longest(streams):
    while True:
        lines = [next(stream, _MISSING) for stream in streams]
        if all(line is _MISSING for line in lines):
            return
        yield lines


def count_lines(path: str) -> int:
    """Newlines in a file (plain or .gz), read in 1 MiB blocks: a fast example count."""
    total = 0
    with _open(os.fspath(path)) as handle:
        while block := handle.read(1 << 20):
            total += block.count(b"\n")
    return total


class DataError(ValueError):
    """A corpus file that cannot be read or used; the message says what to fix."""


def _open_text(path: Path):
    # newline="\n": a stray \r inside a sentence must not split it into two lines.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "rt", encoding="utf-8", newline="\n")


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its newline); a decoding error is a DataError."""
    path = Path(path)
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\n")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 ({error.reason} at byte {error.start}); re-encode it as UTF-8") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read it ({error}); check the file") from None


def aligned_lines(paths: Sequence[str | os.PathLike]) -> list[list[str]]:
    """Every line of each line-aligned file; DataError when a file is missing or their lengths differ."""
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"{path} is missing; re-extract the corpus it belongs to")
    columns = [[line for _, line in numbered_lines(path)] for path in paths]
    for path, lines in zip(paths[1:], columns[1:]):
        if len(lines) != len(columns[0]):
            raise DataError(f"{paths[0]} has {len(columns[0])} lines but {path} has {len(lines)}: "
                            "the files must be line-aligned; re-extract them")
    return columns
