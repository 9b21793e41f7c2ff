"""Pre-tokenized training data: train without TensorFlow or seqio (e.g. on a lent GPU machine).

    python -m mtmoe.pretokenized export --mixture translate_all --out .release/data    # here (seqio registry)
    python -m mtmoe.pretokenized check --dir .release/data                             # a few packed rows

Three steps, each reproducing what the seqio pipeline does for a translation
mixture (tasks/translation.py + seqio.EncDecFeatureConverter(pack=True)):

1. `export` (needs seqio only for the registry: task list, sampling rates, tags):
   every language's training pairs tokenized once with the task vocabulary,
   stored as uint16 ids in one compressed .npz per split, plus meta.json with
   each task's (source, target, rate, tag ids). A translation task's example is
   rebuilt from the pair exactly as the task makes it:
       inputs  = sp.encode("<2xx> " + source)[:L-1] + [EOS]   (= [▁, <2xx>] + sp.encode(source))
       targets = sp.encode(target)[:L-1] + [EOS]
   (seqio.preprocessors.append_eos_after_trim); tests/test_pretokenized.py
   checks this and the packing against seqio's own batches.
2. `mixture_examples`: the temperature-sampled mixture (each task drawn with
   probability rate / sum(rates), each task's examples in a seeded permutation,
   cycled), like seqio's sample_from_datasets over repeated, shuffled tasks.
3. `pack` + `features`: seqio's trim_and_pack (`_pack_with_tf_ops`: chunks of
   max(length) examples, greedy, in order) and EncDecFeatureConverter's features
   (positions, segment ids, decoder inputs shifted right with 0 at each segment
   start, loss weights = non-padding targets). Packed rows are stored as tokens
   (uint16) and segment ids (uint8) only; the rest is derived.

No TensorFlow or seqio import outside `export`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from typing import Iterator, Mapping, Sequence

import numpy as np

EOS_ID = 1
VOCABULARY_FILE = "spm.model"  # a copy of the vocabulary inside the export: data/vocab may be retrained later
SPLITS = {"train": "train", "validation": "dev", "test": "test"}  # seqio split -> corpus folder


# ----------------------------------------------------------------------------------------------
# Reading the corpus (same rules as tasks.sources.read_tsv, without importing seqio)
# ----------------------------------------------------------------------------------------------

def read_pairs(path: str) -> tuple[list[str], list[str]]:
    """(English, other) stripped texts of a corpus TSV, skipping lines tasks.sources.read_tsv skips."""
    english, other = [], []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) < 2:
                continue
            a, b = cells[0].strip(), cells[1].strip()
            if a and b:
                english.append(a)
                other.append(b)
    return english, other


def _ragged(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(<uint16>[total] ids, <int64>[n + 1] offsets) of a list of id lists."""
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for s in sequences for t in s), np.int64, int(offsets[-1]))
    if flat.size and flat.max() >= 1 << 16:
        raise ValueError("token id >= 65536 cannot be stored as uint16; this format needs a vocabulary under 64k")
    return flat.astype(np.uint16), offsets


def _unragged(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


# ----------------------------------------------------------------------------------------------
# 1. export
# ----------------------------------------------------------------------------------------------

def export(*, mixture: str, out_dir: str, corpus_dir: str = "data/embedded", spm_path: str = "data/vocab/mtmoe.model",
           splits: Sequence[str] = ("train", "validation"), max_per_language: Mapping[str, int | None] | None = None,
           print_fn=print) -> dict:
    """Tokenize every language pair of `mixture` once per split into `out_dir`; returns the meta dict.

    Files: spm.model (a copy of the vocabulary), meta.json ({"mixture", "tasks": [{"name", "source", "target", "rate", "tag_ids"}], "splits",
    "spm_sha256"}) and <split>.npz (per language `<lang>/en`, `<lang>/xx` ids and offsets).
    max_per_language: split -> keep only the first n pairs per language (None: all)."""
    import hashlib

    import sentencepiece

    from mtmoe import input_pipeline

    provider = input_pipeline.get_mixture_or_task(mixture)
    vocabulary = provider.output_features["targets"].vocabulary
    if os.path.abspath(vocabulary.sentencepiece_model_file) != os.path.abspath(spm_path):
        raise ValueError(f"{mixture} uses {vocabulary.sentencepiece_model_file}, not {spm_path}; pass --spm that one")
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    space_id = sp.piece_to_id("\u2581")
    tasks_meta, languages = [], set()
    subtasks = {t.name: t for t in getattr(provider, "tasks", [provider])}
    for name, (source, target) in input_pipeline.translation_pairs(mixture):
        rate = float(provider.get_rate(subtasks[name])) if hasattr(provider, "get_rate") else 1.0
        tag = f"<2{target}>"
        tag_id = sp.piece_to_id(tag)
        if tag_id == sp.unk_id():
            raise ValueError(f"vocabulary {spm_path} has no piece {tag}; rebuild it with tasks/train_vocab.py")
        # "<2de> text" encodes as [▁, <2de>] + encode("text") (the dummy-prefix space); the test checks it.
        tasks_meta.append({"name": name, "source": source, "target": target, "rate": rate,
                           "tag_ids": [space_id, tag_id]})
        languages.add(target if source == "en" else source)
    os.makedirs(out_dir, exist_ok=True)
    for split in splits:
        started = time.time()
        arrays, pairs = {}, 0
        limit = (max_per_language or {}).get(split)
        for lang in sorted(languages):
            english, other = read_pairs(os.path.join(corpus_dir, SPLITS[split], f"en-{lang}.tsv.gz"))
            if limit:
                english, other = english[:limit], other[:limit]
            for key, texts in (("en", english), ("xx", other)):
                flat, offsets = _ragged(sp.encode(texts))
                arrays[f"{lang}/{key}"], arrays[f"{lang}/{key}_offsets"] = flat, offsets
            pairs += len(english)
        np.savez_compressed(os.path.join(out_dir, f"{split}.npz"), **arrays)
        print_fn(f"{split}: {pairs} pairs of {len(languages)} languages tokenized in {time.time() - started:.1f}s")
    with open(spm_path, "rb") as f:
        spm_bytes = f.read()
    sha = hashlib.sha256(spm_bytes).hexdigest()
    with open(os.path.join(out_dir, VOCABULARY_FILE), "wb") as f:  # the ids mean nothing without this very file
        f.write(spm_bytes)
    meta = {"mixture": mixture, "tasks": tasks_meta, "splits": list(splits), "spm_sha256": sha,
            "spm_path": spm_path}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


# ----------------------------------------------------------------------------------------------
# 2. the tasks' examples and their mixture
# ----------------------------------------------------------------------------------------------

class Corpus:
    """The exported token ids of one split; `task_examples` rebuilds a task's (inputs, targets)."""

    def __init__(self, directory: str, *, split: str = "train"):
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{meta_path} is missing; run python -m mtmoe.pretokenized export --out {directory}")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.tasks = self.meta["tasks"]
        with np.load(os.path.join(directory, f"{split}.npz")) as data:
            self._arrays = {k: data[k] for k in data.files}

    def language_ids(self, lang: str, side: str) -> list[np.ndarray]:
        """Token ids (no EOS) of one side ('en' or 'xx') of a language's pairs."""
        return _unragged(self._arrays[f"{lang}/{side}"], self._arrays[f"{lang}/{side}_offsets"])

    def task_examples(self, task: Mapping, *, lengths: Mapping[str, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(inputs, targets) <int32> id arrays of a task, EOS appended after trimming, in corpus order."""
        english_to_xx = task["source"] == "en"
        lang = task["target"] if english_to_xx else task["source"]
        source = self.language_ids(lang, "en" if english_to_xx else "xx")
        target = self.language_ids(lang, "xx" if english_to_xx else "en")
        tag = np.asarray(task["tag_ids"], np.int32)
        eos = np.asarray([EOS_ID], np.int32)
        inputs = [np.concatenate([tag, s.astype(np.int32)])[:lengths["inputs"] - 1] for s in source]
        return ([np.concatenate([x, eos]) for x in inputs],
                [np.concatenate([t.astype(np.int32)[:lengths["targets"] - 1], eos]) for t in target])


def mixture_examples(corpus: Corpus, *, lengths: Mapping[str, int], num_examples: int, seed: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """`num_examples` (inputs, targets) drawn from the rate-weighted mixture; also <int32>[n] task index."""
    rng = np.random.default_rng(seed)
    rates = np.asarray([t["rate"] for t in corpus.tasks], np.float64)
    choice = rng.choice(len(rates), size=num_examples, p=rates / rates.sum())  # [n] task per example
    inputs: list = [None] * num_examples
    targets: list = [None] * num_examples
    for index, task in enumerate(corpus.tasks):
        slots = np.flatnonzero(choice == index)
        if not slots.size:
            continue
        task_inputs, task_targets = corpus.task_examples(task, lengths=lengths)
        count = len(task_inputs)
        epochs = -(-slots.size // count)
        order = np.concatenate([rng.permutation(count) for _ in range(epochs)])[:slots.size]  # shuffled, cycled
        for slot, example in zip(slots, order):
            inputs[slot], targets[slot] = task_inputs[example], task_targets[example]
    return inputs, targets, choice.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# 3. packing (seqio.utils.trim_and_pack_dataset, _pack_with_tf_ops) and the features
# ----------------------------------------------------------------------------------------------

def pack(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *, lengths: Mapping[str, int]
         ) -> dict[str, np.ndarray]:
    """Pack examples as seqio does; returns <uint16>[R, L] `inputs`/`targets` and <uint8>[R, L] segment ids.

    seqio pads the stream into chunks of max(lengths) examples and packs each chunk
    greedily in order: an example that does not fit (in inputs or targets) closes the
    row; the chunk's last row is closed at the chunk's end."""
    in_len, tg_len = int(lengths["inputs"]), int(lengths["targets"])
    chunk = max(in_len, tg_len)
    rows_in, rows_tg = [], []
    for start in range(0, len(inputs), chunk):
        row_in: list[np.ndarray] = []
        row_tg: list[np.ndarray] = []
        used_in = used_tg = 0
        for x, y in zip(inputs[start:start + chunk], targets[start:start + chunk]):
            x, y = x[:in_len], y[:tg_len]
            if row_in and (used_in + len(x) > in_len or used_tg + len(y) > tg_len):
                rows_in.append(row_in)
                rows_tg.append(row_tg)
                row_in, row_tg, used_in, used_tg = [], [], 0, 0
            row_in.append(x)
            row_tg.append(y)
            used_in += len(x)
            used_tg += len(y)
        rows_in.append(row_in)
        rows_tg.append(row_tg)
    out = {}
    for key, rows, length in (("inputs", rows_in, in_len), ("targets", rows_tg, tg_len)):
        tokens = np.zeros((len(rows), length), np.uint16)      # [R, L]
        segments = np.zeros((len(rows), length), np.uint8)     # [R, L]; at most L/2 segments (EOS + 1 token each)
        for r, row in enumerate(rows):
            position = 0
            for s, seq in enumerate(row):
                tokens[r, position:position + len(seq)] = seq
                segments[r, position:position + len(seq)] = s + 1
                position += len(seq)
        out[key], out[f"{key}_segment_ids"] = tokens, segments
    return out


def _positions(segment_ids: np.ndarray) -> np.ndarray:
    """<int32>[R, L] position within each segment (0 on padding) of <int>[R, L] segment ids."""
    segment_ids = segment_ids.astype(np.int32)
    index = np.broadcast_to(np.arange(segment_ids.shape[1], dtype=np.int32), segment_ids.shape)
    previous = np.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))     # [R, L] segment id one step left (0 first)
    starts = np.where(segment_ids != previous, index, 0)           # [R, L] index where a segment begins
    return (index - np.maximum.accumulate(starts, axis=1)) * (segment_ids != 0)


def features(packed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EncDecFeatureConverter(pack=True) features, all <int32>[R, L], from `pack`'s rows."""
    enc_tokens = packed["inputs"].astype(np.int32)
    enc_segments = packed["inputs_segment_ids"].astype(np.int32)
    dec_targets = packed["targets"].astype(np.int32)
    dec_segments = packed["targets_segment_ids"].astype(np.int32)
    shifted = np.pad(dec_targets[:, :-1], ((0, 0), (1, 0)))               # [R, T] targets shifted right, 0 first
    previous_segment = np.pad(dec_segments[:, :-1], ((0, 0), (1, 0)))    # [R, T]
    decoder_inputs = np.where(dec_segments == previous_segment, shifted, 0)  # 0 (BOS) at each segment start
    return {
        "encoder_input_tokens": enc_tokens,
        "encoder_segment_ids": enc_segments,
        "encoder_positions": _positions(enc_segments),
        "decoder_target_tokens": dec_targets,
        "decoder_input_tokens": decoder_inputs.astype(np.int32),
        "decoder_segment_ids": dec_segments,
        "decoder_positions": _positions(dec_segments),
        "decoder_loss_weights": (dec_targets != 0).astype(np.int32),
    }


_FORKED: dict = {}  # examples handed to forked packing workers without pickling them


def _pack_range(bounds):
    start, stop = bounds
    return pack(_FORKED["inputs"][start:stop], _FORKED["targets"][start:stop], lengths=_FORKED["lengths"])


def packed_mixture(directory: str, *, lengths: Mapping[str, int], num_examples: int, seed: int,
                   split: str = "train", processes: int = 1) -> dict[str, np.ndarray]:
    """Packed rows (`pack`'s dict) of `num_examples` mixture examples; packs in parallel chunks
    (every max(lengths) examples are packed on their own, so the split changes nothing)."""
    corpus = Corpus(directory, split=split)
    inputs, targets, _ = mixture_examples(corpus, lengths=lengths, num_examples=num_examples, seed=seed)
    chunk = max(lengths.values())
    per_job = chunk * max(1, -(-len(inputs) // (chunk * max(processes, 1) * 4)))
    jobs = [(i, min(i + per_job, len(inputs))) for i in range(0, len(inputs), per_job)]
    _FORKED.update(inputs=inputs, targets=targets, lengths=dict(lengths))
    try:
        if processes > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(processes) as pool:
                parts = pool.map(_pack_range, jobs)
        else:
            parts = [_pack_range(job) for job in jobs]
    finally:
        _FORKED.clear()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class BatchReader:
    """Batches of `features` from packed rows: epochs of seeded row permutations, drop remainder."""

    def __init__(self, packed: Mapping[str, np.ndarray], *, batch_size: int, seed: int = 0, shuffle: bool = True):
        self.packed = dict(packed)
        self.rows = len(self.packed["inputs"])
        if self.rows < batch_size:
            raise ValueError(f"only {self.rows} packed rows for batch_size={batch_size}; export more examples")
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self.epoch, self._order, self._next = 0, self._permutation(), 0

    def _permutation(self) -> np.ndarray:
        return self._rng.permutation(self.rows) if self.shuffle else np.arange(self.rows)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._next + self.batch_size > self.rows:
            self.epoch, self._order, self._next = self.epoch + 1, self._permutation(), 0
        rows = self._order[self._next:self._next + self.batch_size]
        self._next += self.batch_size
        return features({k: v[rows] for k, v in self.packed.items()})


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmoe.pretokenized", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="tokenize a translation mixture's corpus (needs seqio for the registry)")
    ex.add_argument("--mixture", default="translate_all")
    ex.add_argument("--out", required=True)
    ex.add_argument("--spm", default="data/vocab/mtmoe.model")
    ex.add_argument("--corpus", default="data/embedded")
    ex.add_argument("--dev_per_language", type=int, default=64, help="validation pairs kept per language")
    check = sub.add_parser("check", help="pack a few mixture examples and print the first row")
    check.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "export":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        export(mixture=args.mixture, out_dir=args.out, corpus_dir=args.corpus, spm_path=args.spm,
               max_per_language={"validation": args.dev_per_language})
    else:
        packed = packed_mixture(args.dir, lengths={"inputs": 64, "targets": 64}, num_examples=256, seed=0)
        batch = features({k: v[:1] for k, v in packed.items()})
        for key, value in batch.items():
            print(key, value[0].tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
