"""Text sources for SeqIO tasks: TSV and line-aligned files, read leniently.

The readers stream lines from plain or gzip files and skip bad input instead
of failing: an empty line, a TSV line without enough tab-separated columns, a
line that is not valid UTF-8, a line longer than `max_line_bytes`, a pair with
an empty side, and (for line-aligned files) lines of one file that the other
lacks. Skipped lines are counted per file and reason; the counts of the last
complete pass over a file are in `bad_line_counts()` and logged once per file.

`TextSource` is the `seqio.DataSource` the translation and span-corruption
tasks use: a split maps to files, nothing is opened until the dataset is
iterated, and a missing file fails at use with a one-line message saying
what to download or set.
"""

from __future__ import annotations

import collections
import gzip
import logging
import os
import threading
from typing import Callable, Iterator, Mapping, Sequence

import seqio
import tensorflow as tf

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
            "skipped %d bad lines in %s (%s); tasks.sources.bad_line_counts() has them",
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


class TextSource(seqio.DataSource):
    """A SeqIO source of string features read from text files at use time.

    Args:
      split_files: split -> the files of that split (checked when used).
      read: files -> iterator of tuples of strings, one per feature.
      features: the feature names, in the order `read` yields them.
      missing_message: called with the missing path; returns the one-line help.
      num_examples: split -> number of examples, or None to count lines at use.
    """

    def __init__(
        self,
        *,
        split_files: Mapping[str, Sequence[str]],
        read: Callable[[Sequence[str]], Iterator[tuple[str, ...]]],
        features: Sequence[str],
        missing_message: Callable[[str], str],
        num_examples: Mapping[str, int] | None = None,
    ):
        self._split_files = {split: [os.fspath(f) for f in files] for split, files in split_files.items()}
        self._read = read
        self._features = tuple(features)
        self._missing_message = missing_message
        self._num_examples = dict(num_examples or {})
        super().__init__(splits=tuple(split_files), num_input_examples=None, caching_permitted=True)

    def files(self, split: str) -> list[str]:
        """The files of `split`; FileNotFoundError with what to do when one is absent."""
        if split not in self._split_files:
            raise ValueError(f"no split {split!r}; this source has {', '.join(self._split_files)}")
        for path in self._split_files[split]:
            if not os.path.exists(path):
                raise FileNotFoundError(self._missing_message(path))
        return self._split_files[split]

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        del shuffle, seed, sequence_length, use_cached, num_epochs  # one file per split; Task shuffles
        files = self.files(split)  # raises here, at use, when a file is missing
        signature = {name: tf.TensorSpec([], tf.string) for name in self._features}
        dataset = tf.data.Dataset.from_generator(lambda: self._examples(files), output_signature=signature)
        if shard_info and shard_info.num_shards > 1:
            dataset = dataset.shard(shard_info.num_shards, shard_info.index)
        return dataset

    def examples(self, split: str) -> Iterator[dict[str, str]]:
        """The split's examples as dicts of str, read in Python (no TensorFlow)."""
        return self._examples(self.files(split))

    def _examples(self, files: Sequence[str]) -> Iterator[dict[str, str]]:
        for values in self._read(files):
            yield dict(zip(self._features, values))

    def num_input_examples(self, split: str) -> int:
        if split not in self._num_examples:
            self._num_examples[split] = count_lines(self.files(split)[0])
        return self._num_examples[split]

    def list_shards(self, split: str) -> Sequence[str]:
        return list(self._split_files[split])

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False


import tasks as _tasks  # noqa: E402  (see tasks/__init__.py: registration waits for this module)

_tasks._register_when_ready(__name__)
