"""The training input pipeline: a seqio task or mixture -> numpy batches for this process.

- `SeqioSource`: what the trainer and its evaluator read from a seqio task or
  mixture (training batches, validation rows, the sentences BLEU is scored
  on, the vocabulary and language pairs). `mtmoe.token_cache.CacheSource`
  offers the same methods over a pre-tokenized cache, without TensorFlow;
  `make_source` picks one from a `DatasetConfig`.
- `get_mixture_or_task`, `translation_pairs`: look a task or
  mixture up in seqio's registries (importing the registry module first, as
  T5X's MIXTURE_OR_TASK_MODULE does), with a one-line `UsageError` for an
  unknown name.
- `make_dataset`: batched, deterministic tf.data of EncDecFeatureConverter
  features ([B, L] int32 per feature; B = this process's share of the global
  batch), sharded over processes; `_sampled_tasks` is the small-buffer
  variant for mixtures of hundreds of tasks (SHUFFLE_BUFFER_SIZE).
- `BatchIterator`: numpy batches that count how many were delivered; that count
  is the data position a checkpoint stores, so a restart skips exactly as many.

seqio and TensorFlow are imported inside the functions: the Translator and the
web UI import mtmoe without them. Sharding a host batch over the mesh is
`partitioning.shard_batch`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
from typing import Mapping

import numpy as np

from mtmoe.command_line import UsageError
from mtmoe.data import languages


def import_registry_module(module: str | None) -> None:
    """Import the module that registers the tasks (MIXTURE_OR_TASK_MODULE); one-line error if it cannot be."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise UsageError(f"cannot import the task registry module {module!r} (MIXTURE_OR_TASK_MODULE): {err}; "
                         f"run from the repository root or set --gin.MIXTURE_OR_TASK_MODULE") from None


def get_mixture_or_task(name: str, *, module: str | None = "tasks"):
    """seqio Mixture/Task by name, after importing its registry `module`; one-line error if unknown."""
    import seqio

    import_registry_module(module)
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = sorted(set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names()))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(known)} are registered, e.g. {', '.join(known[:3])}"
        raise UsageError(f"unknown task or mixture {name!r} (MIXTURE_OR_TASK_NAME); {hint}") from None


def translation_pairs(name: str, *, module: str | None = "tasks") -> list[tuple[str, tuple[str, str]]]:
    """(task name, (source, target)) of the translation tasks in a mixture or task."""
    return _pairs_of(get_mixture_or_task(name, module=module))


def _pairs_of(provider) -> list[tuple[str, tuple[str, str]]]:
    task_names = [t.name for t in getattr(provider, "tasks", [provider])]
    return [(n, pair) for n, pair in ((n, pair_from_task_name(n)) for n in task_names) if pair is not None]


def pair_from_task_name(task_name: str) -> tuple[str, str] | None:
    """'embedded_translate_zh_Hans_en' -> ('zh-Hans', 'en'); None for other tasks."""
    if "_translate_" not in f"_{task_name}":
        return None
    parts = task_name.split("translate_", 1)[1].split("_")
    for cut in range(1, len(parts)):
        source, target = "-".join(parts[:cut]), "-".join(parts[cut:])
        # Task names hold the project's codes as written: a looser lookup would
        # read `en_CA_af` as `en` / `ca-AF` (Catalan in Afghanistan).
        if source in languages.LANGUAGES and target in languages.LANGUAGES:
            return source, target
    return None


MIXTURE_SHUFFLE_BUFFER = 4096  # examples; SHUFFLE_BUFFER_SIZE None picks it for a mixture's one buffer
# A mixture's validation rows are drawn from its members at the mixture rates; this fixed
# seed makes that draw, and so the validation loss, the same in every run and for every seed.
EVAL_SEED = 0


def make_dataset(*, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], split: str,
                 batch_size: int, shuffle: bool, seed: int | None, pack: bool, num_epochs: int | None,
                 use_cached: bool = False, shard_index: int = 0, num_shards: int = 1,
                 shuffle_buffer_size: int | None = None, module: str | None = "tasks"):
    """Batched tf.data.Dataset of EncDecFeatureConverter features for this process.

    A task or mixture is read as one pipeline (`_mixture_dataset`); with
    use_cached, seqio.get_dataset reads seqio's cache.
    shuffle_buffer_size: the pipeline's one shuffle buffer, in examples
    (None: MIXTURE_SHUFFLE_BUFFER).

    Deterministic for a given seed: shuffles and mixture sampling are seeded
    and tf.data keeps element order, so skipping n batches after a restart
    reproduces the uninterrupted stream."""
    import seqio
    import tensorflow as tf

    provider = get_mixture_or_task(mixture_or_task_name, module=module)
    shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
    if not use_cached:
        dataset = _mixture_dataset(provider, lengths=dict(task_feature_lengths), split=split, shuffle=shuffle,
                                   seed=seed, num_epochs=num_epochs, shard_info=shard_info,
                                   shuffle_buffer_size=shuffle_buffer_size or MIXTURE_SHUFFLE_BUFFER)
        dataset = seqio.EncDecFeatureConverter(pack=pack)(dataset, dict(task_feature_lengths))
    else:
        dataset = seqio.get_dataset(
            provider, task_feature_lengths=dict(task_feature_lengths),
            feature_converter=seqio.EncDecFeatureConverter(pack=pack), dataset_split=split,
            use_cached=use_cached, shuffle=shuffle, num_epochs=num_epochs, shard_info=shard_info,
            verbose=False, seed=seed)

    options = tf.data.Options()
    options.deterministic = True  # exact resume: the same seed must give the same batches in the same order
    # A mixture of hundreds of tasks otherwise starts threads per task and op; on a small host they
    # fight the training step for the CPU.
    options.threading.private_threadpool_size = max(2, min(8, os.cpu_count() or 2))
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options).batch(batch_size, drop_remainder=True)


def _mixture_dataset(mixture, *, lengths, split, shuffle, seed, num_epochs, shard_info, shuffle_buffer_size):
    """A seqio Mixture (or a Task: a mixture of one) as one tf.data pipeline: sample the tasks' sources,
    then preprocess once.

    seqio's Mixture.get_dataset builds each task's whole pipeline (every
    preprocessor traced into its own graph, a 1000-example shuffle buffer and
    a prefetch thread per task) before it samples them: for the 115 span
    corruption or 228 translation tasks of the embedded corpus that took
    minutes before the first batch on a 2-core host. The tasks of a mixture
    mostly share their preprocessors and differ only in the source (and, for
    translation, the target-language tag in front). So tasks are grouped by
    the preprocessors they share at the end of their lists
    (`_shared_preprocessing`); within a group each task's source gets only
    its own leading preprocessors, the group's sources are sampled with the
    mixture's rates, and the shared preprocessors run once on the sampled
    stream. Groups are then sampled with their summed rates, so every task
    keeps its share. One shuffle buffer of `shuffle_buffer_size` examples
    mixes the result (the embedded corpus's files are already shuffled when
    built; seqio's per-task buffers did that job for sources read in order).
    """
    import tensorflow as tf

    tasks = [task for task in getattr(mixture, "tasks", [mixture]) if split in task.splits]
    if not tasks:
        raise UsageError(f"no task of {mixture.name} has a {split!r} split")
    keys = list(mixture.output_features)
    datasets, weights = [], []
    for shared, members in _shared_preprocessing(tasks):
        sampled, rates = [], []
        for task, own in members:
            dataset = _source_dataset(task, split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)
            if num_epochs != 1:
                dataset = dataset.repeat(num_epochs)
            sampled.append(_preprocess(task, own, dataset, lengths=lengths, seed=seed))
            rates.append(float(mixture.get_rate(task)) if hasattr(mixture, "get_rate") else 1.0)
        dataset = sampled[0] if len(sampled) == 1 else tf.data.Dataset.sample_from_datasets(
            sampled, weights=rates, seed=seed)
        dataset = _preprocess(members[0][0], shared, dataset, lengths=lengths, seed=seed)
        datasets.append(dataset.map(lambda ex: {k: ex[k][:lengths[k]] for k in keys}))  # seqio's trim
        weights.append(sum(rates))
    dataset = datasets[0] if len(datasets) == 1 else tf.data.Dataset.sample_from_datasets(
        datasets, weights=weights, seed=seed)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    return dataset


def _shared_preprocessing(tasks) -> list[tuple[list, list[tuple[object, list]]]]:
    """Tasks grouped by the preprocessors that end their lists alike.

    Returns [(shared preprocessors, [(task, its own leading preprocessors), ...]), ...].
    Tasks whose lists agree after the first preprocessor form a group (a
    translation task's first one adds its own language tag); the group shares
    everything after the first, and the first too when all its tasks agree on
    it. Preprocessors are alike when they are the same function, or
    functools.partials of it with equal arguments."""
    groups: list[tuple[list, list]] = []
    for task in tasks:
        chain = [_preprocessor_key(p) for p in task.preprocessors]
        for tail, members in groups:
            if tail == chain[1:]:
                members.append((task, chain))
                break
        else:
            groups.append((chain[1:], [(task, chain)]))
    result = []
    for tail, members in groups:
        heads = [chain[:1] for _, chain in members]
        shared = len(tail) + (1 if heads[0] and all(head == heads[0] for head in heads) else 0)
        cut = len(members[0][0].preprocessors) - shared
        result.append((list(members[0][0].preprocessors)[cut:],
                       [(task, list(task.preprocessors)[:cut]) for task, _ in members]))
    return result


def _preprocessor_key(preprocessor):
    """What makes two preprocessors alike: the function and, for a partial, its arguments."""
    if isinstance(preprocessor, functools.partial):
        return (_preprocessor_key(preprocessor.func), preprocessor.args, sorted(preprocessor.keywords.items()))
    return preprocessor


def _source_dataset(task, *, split, shuffle, seed, shard_info):
    """A task's source examples for this process, sharded as seqio.Task.get_dataset shards them."""
    source = task.source
    if shard_info is not None and not source.supports_arbitrary_sharding:
        return source.get_dataset(split=split, shuffle=shuffle, seed=seed).shard(
            shard_info.num_shards, shard_info.index)
    return source.get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)


def _preprocess(task, preprocessors, dataset, *, lengths, seed):
    """`preprocessors` applied as `task` applies its own (sequence lengths, output features, seeds)."""
    import seqio

    if not preprocessors:
        return dataset
    # An unregistered Task: seqio's own code passes each preprocessor its keyword
    # arguments and seeds its random ops, exactly as for the registered task.
    part = seqio.Task(f"{task.name}_part", source=task.source, preprocessors=preprocessors,
                      output_features=task.output_features, shuffle_buffer_size=None)
    dataset = part.preprocess_precache(dataset, seed=seed)
    return part.preprocess_postcache(dataset, sequence_length=lengths, seed=seed)


class BatchIterator:
    """Numpy batches from a dataset, counting what it delivered (the data position)."""

    def __init__(self, dataset, *, skip_batches: int = 0):
        self.batches_consumed = skip_batches
        self._iterator = dataset.skip(skip_batches).as_numpy_iterator() if skip_batches else dataset.as_numpy_iterator()

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        self.batches_consumed += 1
        return batch


class SeqioSource:
    """A `DatasetConfig`'s seqio task or mixture, as the trainer and its evaluator read it.

    Training rows: the task's examples, shuffled with `seed` (the run's data
    seed; None only for evaluation), packed by EncDecFeatureConverter into [L]
    int32 features; batch k of a process is rows k*b .. (k+1)*b - 1 of its
    shard (b = its share of the batch)."""

    def __init__(self, config, *, seed: int | None = None):
        from mtmoe import command_line

        command_line.hide_accelerators_from_tensorflow()  # before tf.data first runs
        self.config, self.seed = config, seed
        self.lengths = {"inputs": int(config.task_feature_lengths["inputs"]),
                        "targets": int(config.task_feature_lengths["targets"])}
        provider = get_mixture_or_task(config.mixture_or_task_name, module=config.module)  # checks the name
        self.vocabulary = provider.output_features["targets"].vocabulary
        self.pairs = _pairs_of(provider)

    def describe(self) -> str:
        return f"seqio {self.config.mixture_or_task_name}"

    def train_batches(self, *, batch_size: int, skip_batches: int, process_index: int,
                      process_count: int) -> "BatchIterator":
        """Endless numpy batches of `batch_size` rows for this process, after skipping `skip_batches`."""
        config = self.config
        dataset = make_dataset(
            mixture_or_task_name=config.mixture_or_task_name, task_feature_lengths=self.lengths, split=config.split,
            batch_size=batch_size, shuffle=config.shuffle, seed=self.seed, pack=config.pack, num_epochs=None,
            use_cached=config.use_cached, shard_index=process_index, num_shards=process_count,
            shuffle_buffer_size=config.shuffle_buffer_size, module=config.module)
        return BatchIterator(dataset, skip_batches=skip_batches)

    def eval_rows(self, *, split: str, limit: int, process_index: int, process_count: int) -> list[dict]:
        """Up to `limit` packed rows of `split` (unshuffled; a mixture's members drawn with EVAL_SEED)
        from this process's shard."""
        dataset = make_dataset(
            mixture_or_task_name=self.config.mixture_or_task_name, task_feature_lengths=self.lengths, split=split,
            batch_size=1, shuffle=False, seed=EVAL_SEED, pack=self.config.pack, num_epochs=1,
            shard_index=process_index, num_shards=process_count, module=self.config.module).unbatch()
        return list(dataset.take(limit).as_numpy_iterator())

    def pair_examples(self, task_name: str, *, split: str, limit: int) -> tuple[list[list[int]], list[str]]:
        """(source token ids as the task makes them, reference texts) of a task's first `limit` examples."""
        import seqio

        dataset = seqio.get_mixture_or_task(task_name).get_dataset(
            sequence_length=dict(self.lengths), split=split, shuffle=False, num_epochs=1)
        sources, references = [], []
        for example in dataset.take(limit).as_numpy_iterator():
            sources.append([int(t) for t in example["inputs"]])
            references.append(example["targets_pretokenized"].decode("utf-8"))
        return sources, references


def make_source(config, *, seed: int | None = None):
    """The source a `DatasetConfig` names: the pre-tokenized cache when `cache_dir` is set, else seqio.

    seed: the training run's data seed (None: the source serves evaluation only)."""
    if config.cache_dir:
        from mtmoe import token_cache

        return token_cache.CacheSource(config, seed=seed)
    return SeqioSource(config, seed=seed)
