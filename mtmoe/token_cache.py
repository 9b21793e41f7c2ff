"""The pre-tokenized cache: a seqio task's packed training rows, written once, read without TensorFlow.

    python -m mtmoe.token_cache --gin_file=gin/experiments/release.gin --steps 6000 --out /data/release_cache
    python -m mtmoe.train --gin_file=gin/experiments/release.gin --gin.TRAIN_CACHE_DIR="'/data/release_cache'" \\
        --gin.MODEL_DIR="'runs/release'"

In the spirit of seqio's `cache_tasks_main`, but one step further: the cache
holds what the trainer's seqio source yields after feature conversion
(EncDecFeatureConverter, packed), in order, for the run's seed. So training
from the cache sees exactly the batches training from seqio sees, and a
machine without TensorFlow (an accelerator host) runs the same
`python -m mtmoe.train` over it with the same checkpoints, evaluator and resume.

Layout of a cache directory (`N` training rows, `V` validation rows):

    manifest.json             task, lengths, pack, seed, row counts, language pairs, vocabulary
    train/<feature>.npy       int32[N, L] per EncDecFeatureConverter feature (memory-mapped on read)
    validation/<feature>.npy  int32[V, L]: the first rows of the evaluation split, unshuffled
    bleu.json                 {task: {"sources": [[ids]], "references": [text]}} for the BLEU pairs
    vocabulary.model          the SentencePiece model, so the cache needs nothing else

Batch k of a run with global batch B is rows k*B .. (k+1)*B - 1 (process p of
P reads its B/P of them); past row N the rows repeat from the start, and the
trainer says so when it starts. The cache is written into a temporary
directory beside `--out` and renamed into place when complete: an
interrupted write never leaves a cache that looks whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
import time
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from mtmoe import command_line
from mtmoe.command_line import UsageError
from mtmoe.train_config import EvalConfig

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VOCABULARY_FILE = "vocabulary.model"
CHUNK_ROWS = 1024  # rows pulled from tf.data per write: large enough to amortise a batch, small in memory


@dataclasses.dataclass(frozen=True)
class CachedVocabulary:
    """What the trainer needs of a vocabulary: the SentencePiece file and its sentinel count."""

    sentencepiece_model_file: str
    extra_ids: int


class CacheBatches:
    """Endless batches of this process's rows, counting what it delivered (the data position)."""

    def __init__(self, arrays: dict[str, np.ndarray], *, batch_size: int, skip_batches: int, process_index: int,
                 process_count: int):
        self._arrays = arrays
        self._rows = len(next(iter(arrays.values())))
        self._local = batch_size
        self._global = batch_size * process_count
        self._offset = process_index * batch_size
        self.batches_consumed = skip_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        start = self.batches_consumed * self._global + self._offset
        index = (start + np.arange(self._local)) % self._rows  # past the last row: from the start again
        self.batches_consumed += 1
        return {name: np.asarray(array[index]) for name, array in self._arrays.items()}


def _read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise UsageError(f"{directory} is not a pre-tokenized cache (no {MANIFEST}); write one with "
                         f"python -m mtmoe.token_cache --gin_file=<the run's gin files> --out {directory}")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT_VERSION:
        raise UsageError(f"cache {directory} has format {manifest.get('format')}, this mtmoe reads "
                         f"{FORMAT_VERSION}; rewrite it with python -m mtmoe.token_cache")
    return manifest


class CacheSource:
    """A `DatasetConfig` whose `cache_dir` is set: the same methods as `input_pipeline.SeqioSource`.

    seed: the training run's data seed, which must be the one the cache was
    written with (None: the cache serves evaluation only)."""

    def __init__(self, config, *, seed: int | None = None):
        self.config = config
        self.directory = os.path.abspath(os.path.expanduser(config.cache_dir))
        manifest = _read_manifest(self.directory)
        self.manifest = manifest
        self.lengths = {"inputs": int(config.task_feature_lengths["inputs"]),
                        "targets": int(config.task_feature_lengths["targets"])}
        wanted = {"mixture_or_task_name": config.mixture_or_task_name, "task_feature_lengths": self.lengths,
                  "pack": bool(config.pack)}
        for key, value in wanted.items():
            if manifest[key] != value:
                raise UsageError(f"cache {self.directory} was written with {key}={manifest[key]!r}, the run asks for "
                                 f"{value!r}; rewrite the cache with the run's gin files or change the run")
        if seed is not None:  # training: checked here, before the trainer writes anything
            if config.split != manifest["split"]:
                raise UsageError(f"cache {self.directory} holds split {manifest['split']!r}, the run trains on "
                                 f"{config.split!r}; rewrite the cache or change the run")
            if seed != manifest["seed"]:
                raise UsageError(f"cache {self.directory} holds the rows of data seed {manifest['seed']}, the run "
                                 f"uses {seed}; pass --gin.SEED={manifest['seed']} or rewrite the cache")
        self.vocabulary = CachedVocabulary(os.path.join(self.directory, VOCABULARY_FILE), manifest["extra_ids"])
        self.pairs = [(task, (source, target)) for task, (source, target) in manifest["pairs"]]
        self.rows = int(manifest["rows"])

    def describe(self) -> str:
        steps = self.rows // self.config.batch_size
        return (f"pre-tokenized cache {self.directory} ({self.rows} rows = {steps} steps of batch "
                f"{self.config.batch_size}; later steps repeat them from the start)")

    def _arrays(self, split_dir: str) -> dict[str, np.ndarray]:
        return {name: np.load(os.path.join(self.directory, split_dir, f"{name}.npy"), mmap_mode="r")
                for name in self.manifest["features"]}

    def train_batches(self, *, batch_size: int, skip_batches: int, process_index: int,
                      process_count: int) -> CacheBatches:
        return CacheBatches(self._arrays("train"), batch_size=batch_size, skip_batches=skip_batches,
                            process_index=process_index, process_count=process_count)

    def eval_rows(self, *, split: str, limit: int, process_index: int, process_count: int) -> list[dict]:
        if split != self.manifest["eval_split"]:
            raise ValueError(f"the cache holds split {self.manifest['eval_split']!r}, not {split!r}")
        arrays = self._arrays("validation")
        count = len(next(iter(arrays.values())))
        picked = range(process_index, count, process_count)[:limit]
        return [{name: np.asarray(array[i]) for name, array in arrays.items()} for i in picked]

    @functools.cached_property
    def _bleu_examples(self) -> dict[str, dict]:
        with open(os.path.join(self.directory, "bleu.json"), encoding="utf-8") as f:
            return json.load(f)

    def pair_examples(self, task_name: str, *, split: str, limit: int) -> tuple[list[list[int]], list[str]]:
        if split != self.manifest["eval_split"]:
            raise ValueError(f"the cache holds split {self.manifest['eval_split']!r}, not {split!r}")
        examples = self._bleu_examples
        if task_name not in examples:
            raise ValueError(f"the cache holds no BLEU sentences of {task_name}")
        return examples[task_name]["sources"][:limit], examples[task_name]["references"][:limit]


def write(*, config, eval_config, seed: int, rows: int, out_dir: str,
          print_fn: Callable[[str], None] = print) -> str:
    """Write the cache of `config` (a DatasetConfig read through seqio) for data seed `seed`; returns its path.

    rows: training rows to write (steps x global batch). The evaluation split's
    first eval_config.batches x batch rows and eval_config.bleu_examples
    sentences of its first eval_config.bleu_pairs pairs go in too."""
    from mtmoe import input_pipeline

    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    if os.path.exists(out_dir):
        raise UsageError(f"{out_dir} exists; remove it or pass another --out (a cache is never overwritten)")
    if rows < 1:
        raise UsageError(f"--steps gives {rows} rows; it must be positive")
    source = input_pipeline.SeqioSource(dataclasses.replace(config, cache_dir=None), seed=seed)
    spm_path = getattr(source.vocabulary, "sentencepiece_model_file", None)
    if not spm_path:
        raise UsageError(f"{config.mixture_or_task_name}'s vocabulary is not a SentencePiece file; the cache needs one")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        started = time.time()
        features = _write_train_rows(source, rows=rows, directory=os.path.join(partial, "train"))
        try:
            eval_rows = source.eval_rows(split=eval_config.split, limit=eval_config.batches * config.batch_size,
                                         process_index=0, process_count=1)
        except Exception as err:  # a task without this split: the run then skips validation loss, as from seqio
            print_fn(f"no validation rows: split {eval_config.split!r} unavailable ({command_line.first_line(err)})")
            eval_rows = []
        os.makedirs(os.path.join(partial, "validation"))
        for name in features:
            stacked = np.stack([r[name] for r in eval_rows]) if eval_rows else np.zeros((0, 1), np.int32)
            np.save(os.path.join(partial, "validation", f"{name}.npy"), stacked.astype(np.int32))
        bleu = {}
        for task_name, _ in source.pairs[:eval_config.bleu_pairs]:
            try:
                sources, references = source.pair_examples(task_name, split=eval_config.split,
                                                           limit=eval_config.bleu_examples)
            except Exception as err:  # the run then skips this pair's BLEU, as from seqio
                print_fn(f"no BLEU sentences of {task_name}: {command_line.first_line(err)}")
                continue
            bleu[task_name] = {"sources": sources, "references": references}
        with open(os.path.join(partial, "bleu.json"), "w", encoding="utf-8") as f:
            json.dump(bleu, f, ensure_ascii=False)
        shutil.copyfile(spm_path, os.path.join(partial, VOCABULARY_FILE))
        manifest = {
            "format": FORMAT_VERSION, "mixture_or_task_name": config.mixture_or_task_name,
            "task_feature_lengths": source.lengths, "pack": bool(config.pack), "split": config.split,
            "seed": seed, "rows": rows, "features": features, "eval_split": eval_config.split,
            "eval_rows": len(eval_rows), "pairs": [[task, list(pair)] for task, pair in source.pairs],
            "extra_ids": int(getattr(source.vocabulary, "extra_ids", 0)),
        }
        with open(os.path.join(partial, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        os.replace(partial, out_dir)
        print_fn(f"wrote {out_dir}: {rows} training rows, {len(eval_rows)} validation rows, BLEU sentences of "
                 f"{len(bleu)} pairs, in {time.time() - started:.1f}s")
        return out_dir
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _write_train_rows(source, *, rows: int, directory: str) -> list[str]:
    """The first `rows` training rows of `source` as int32[rows, L] .npy files; returns the features."""
    os.makedirs(directory)
    batches = source.train_batches(batch_size=CHUNK_ROWS, skip_batches=0, process_index=0, process_count=1)
    outputs: dict[str, np.ndarray] = {}
    written = 0
    # disable=None: drawn on a terminal only; a log gets the one "wrote" line at the end.
    with tqdm(total=rows, unit="row", desc="training rows", disable=None, mininterval=1.0) as bar:
        while written < rows:
            batch = next(batches)
            if not outputs:
                outputs = {name: np.lib.format.open_memmap(os.path.join(directory, f"{name}.npy"), mode="w+",
                                                           dtype=np.int32, shape=(rows,) + value.shape[1:])
                           for name, value in batch.items()}
            take = min(CHUNK_ROWS, rows - written)
            for name, value in batch.items():
                outputs[name][written:written + take] = value[:take]
            written += take
            bar.update(take)
    for array in outputs.values():
        array.flush()
    return sorted(outputs)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mtmoe.token_cache`: write the cache of a training run's dataset; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m mtmoe.token_cache",
        description="Write the pre-tokenized cache of a training run's dataset (read by mtmoe.train "
                    "with --gin.TRAIN_CACHE_DIR). Gin flags as for mtmoe.train.")
    parser.add_argument("--out", required=True, help="the cache directory to create (must not exist)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps the cache covers (default: the run's TRAIN_STEPS); rows = steps x BATCH_SIZE")
    args, rest = parser.parse_known_args(argv)
    try:
        flags, bindings = command_line.parse_command_line(rest)  # --gin_file, --gin.NAME=VALUE, ... as for training
        if not any(b.split("=", 1)[0].strip() == "MODEL_DIR" for b in bindings):
            bindings.append("MODEL_DIR = 'unused'")  # the runs' gin files require it; the cache writes no model
        command_line.parse_gin(gin_files=flags.gin_file, bindings=bindings,
                               search_paths=flags.gin_search_paths.split(","))
        import gin

        from mtmoe import train

        bound = gin.get_bindings(train.train)
        config, eval_config = bound["train_dataset_cfg"], bound.get("eval_cfg")
        if config.cache_dir:
            raise UsageError("the gin config already reads from a cache (TRAIN_CACHE_DIR); unset it to write one")
        eval_config = eval_config or EvalConfig()
        steps = args.steps if args.steps is not None else int(bound["train_steps"])
        seed = config.seed if config.seed is not None else int(bound.get("seed", 0))
        write(config=config, eval_config=eval_config, seed=seed, rows=steps * config.batch_size, out_dir=args.out)
    except UsageError as err:
        print(f"error: {command_line.first_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
