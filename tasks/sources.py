"""The seqio data source of the text tasks: files per split, read by mtmoe.data.readers.

`TextSource` maps a split to files; nothing is opened until the dataset is
iterated, and a missing file fails at use with a one-line message saying what
to download or set. `LazyFilesSource` finds its files only then, for corpora
whose root comes from gin or the environment. The reading itself (lenient,
skipped lines counted) is `mtmoe.data.readers`, which works without TensorFlow.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Mapping, Sequence

import seqio
import tensorflow as tf

from mtmoe.data import readers


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
        files = self._find_files(split)
        for path in files:
            if not os.path.exists(path):
                raise FileNotFoundError(self._missing_message(path))
        return files

    def _find_files(self, split: str) -> list[str]:
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
            self._num_examples[split] = readers.count_lines(self.files(split)[0])
        return self._num_examples[split]

    def list_shards(self, split: str) -> Sequence[str]:
        return list(self._split_files[split])

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False


class LazyFilesSource(TextSource):
    """A TextSource whose files are found when used (roots come from gin or the environment then).

    Args:
      files_fn: split -> the files of that split; may raise FileNotFoundError with what to do.
      splits: the splits it offers.
      Other arguments as TextSource.
    """

    def __init__(self, *, files_fn: Callable[[str], Sequence[str]], splits: Sequence[str], **kwargs):
        self._files_fn = files_fn
        super().__init__(split_files={split: [] for split in splits}, **kwargs)

    def _find_files(self, split: str) -> list[str]:
        return [os.fspath(path) for path in self._files_fn(split)]

    def list_shards(self, split: str) -> Sequence[str]:
        return self.files(split)
