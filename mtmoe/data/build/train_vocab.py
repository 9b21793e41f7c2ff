"""Trains the project's SentencePiece vocabulary on the embedded corpus.

    python -m mtmoe.data.build.train_vocab                     # -> data/vocab/mtmoe.model, .vocab
    python -m mtmoe.data.build.train_vocab --vocab-size 8000 --out /tmp/v8k   # another size, elsewhere
    python -m mtmoe.data.build.train_vocab --measure 8000 16000 32000         # tokens per sentence table

Training text: both sides of `data/embedded/train/*.tsv.gz`, each language's
sentences sampled with probability ~ n_lang^alpha (alpha 0.3, as mT5 samples
its languages), so that a language with 3,000 pairs still gets pieces next to
one with 80,000; English, one side of every pair, gets a fixed quarter of the sample.

Model: unigram, byte_fallback=True (no character is ever unknown: without it a
Latin-heavy sample leaves rare CJK characters as <unk>, and a young model learns
to emit <unk>), pad 0 / eos 1 / unk 2 / no bos, and one user-defined piece
`<2xx>` per corpus language and `<2en>` right after the special ids.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import random
import sys
import tempfile
import time

from tqdm import tqdm

from mtmoe.data import layouts, vocabulary
from mtmoe.data.build import log_line

DEFAULT_CORPUS = os.fspath(layouts.DEFAULT_EMBEDDED_DIR)
DEFAULT_OUT = vocabulary.DEFAULT_SPM_PATH.removesuffix(".model")
DEFAULT_VOCAB_SIZE = 16000
ALPHA = 0.3
DEFAULT_SAMPLE_SENTENCES = 600_000
# English is one side of every pair, about half the tokens a model reads; with
# n^0.3 sampling it would be one language in 115. It gets a quarter of the
# sample instead, or all its unique sentences where that is less (the committed
# corpus has 50,349 unique English train sentences: 9% of a 600k sample).
ENGLISH_SHARE = 0.25
CHARACTER_COVERAGE = 0.9999
SEED = 20261128


def read_corpus_sides(corpus_dir: str, *, split: str = "train") -> dict[str, list[str]]:
    """{lang: unique sentences} for every language side of `<corpus>/<split>/en-*.tsv.gz`,
    English ("en") gathered from all files."""
    paths = sorted(glob.glob(os.path.join(layouts.embedded_split_dir(corpus_dir, split), "en-*.tsv.gz")))
    if not paths:
        raise FileNotFoundError(f"no {split}/en-*.tsv.gz files in {corpus_dir}: build the corpus first "
                                f"({layouts.BUILD_COMMAND})")
    sides: dict[str, dict[str, None]] = collections.defaultdict(dict)
    for path in paths:
        lang = os.path.basename(path)[len("en-"):-len(".tsv.gz")]
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                english, _, other = line.rstrip("\n").partition("\t")
                sides["en"][english] = None
                sides[lang][other] = None
    return {lang: list(sentences) for lang, sentences in sides.items()}


def sampling_counts(sizes: dict[str, int], *, total: int, alpha: float = ALPHA) -> dict[str, int]:
    """Sentences to draw per language: total * n^alpha / sum(n^alpha), at most n.

    What a capped language cannot use is shared out again among the others."""
    counts = {lang: 0 for lang in sizes}
    remaining, open_langs = total, {lang for lang, n in sizes.items() if n > 0}
    while remaining > 0 and open_langs:
        weights = {lang: sizes[lang] ** alpha for lang in open_langs}
        norm = sum(weights.values())
        handed = 0
        for lang in sorted(open_langs):
            share = min(sizes[lang] - counts[lang], max(1, round(remaining * weights[lang] / norm)))
            counts[lang] += share
            handed += share
        remaining -= handed
        open_langs = {lang for lang in open_langs if counts[lang] < sizes[lang]}
        if handed == 0:
            break
    return counts


def write_training_text(sides: dict[str, list[str]], path: str, *, total: int, seed: int = SEED) -> dict[str, int]:
    """Samples the sentences into a one-sentence-per-line file; returns counts."""
    english = min(len(sides.get("en", [])), round(total * ENGLISH_SHARE))
    counts = sampling_counts({lang: len(s) for lang, s in sides.items() if lang != "en"}, total=total - english)
    counts["en"] = english
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for lang in sorted(sides):
            for sentence in rng.sample(sides[lang], counts[lang]):
                f.write(sentence + "\n")
    return counts


def train(*, corpus_dir: str = DEFAULT_CORPUS, model_prefix: str = DEFAULT_OUT,
          vocab_size: int = DEFAULT_VOCAB_SIZE, sample_sentences: int = DEFAULT_SAMPLE_SENTENCES,
          log=print) -> str:
    """Trains the model; returns the path of the .model file."""
    import sentencepiece

    sides = read_corpus_sides(corpus_dir)
    tags = [vocabulary.language_tag(lang) for lang in ["en", *sorted(lang for lang in sides if lang != "en")]]
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mtmoe-spm-") as work:
        text_path = os.path.join(work, "sample.txt")
        counts = write_training_text(sides, text_path, total=sample_sentences)
        log(f"training on {sum(counts.values())} sentences of {len(counts)} languages "
            f"(fewest: {min(counts.values())}, most: {max(counts.values())}), {len(tags)} tags")
        start = time.time()
        sentencepiece.SentencePieceTrainer.train(
            input=text_path, model_prefix=os.path.join(work, "m"), model_type="unigram",
            vocab_size=vocab_size, byte_fallback=True, character_coverage=CHARACTER_COVERAGE,
            pad_id=vocabulary.PAD_ID, eos_id=vocabulary.EOS_ID, unk_id=vocabulary.UNK_ID,
            bos_id=vocabulary.BOS_ID, user_defined_symbols=tags,
            split_digits=True, input_sentence_size=0, shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1, minloglevel=2,
            # Help paragraphs reach 600 characters; CJK is 3 bytes a character.
            max_sentence_length=4096,
        )
        for extension in (".model", ".vocab"):
            os.replace(os.path.join(work, "m" + extension), model_prefix + extension)
    log(f"wrote {model_prefix}.model ({vocab_size} pieces) in {time.time() - start:.0f}s")
    return model_prefix + ".model"


def measure(model_path: str, *, corpus_dir: str = DEFAULT_CORPUS, split: str = "dev", max_tokens: int = 32) -> dict:
    """How a model cuts each language side of a split: mean tokens per sentence,
    the share of tokens that are byte-fallback pieces, and the share of
    sentences that fit in `max_tokens` (the demo's feature length)."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
    table = {}
    for lang, sentences in sorted(read_corpus_sides(corpus_dir, split=split).items()):
        encoded = sp.encode(sentences)
        tokens = sum(len(ids) for ids in encoded)
        table[lang] = {
            "tokens_per_sentence": round(tokens / max(1, len(sentences)), 2),
            "byte_fraction": round(sum(sp.is_byte(i) for ids in encoded for i in ids) / max(1, tokens), 4),
            "fits": round(sum(len(ids) + 1 <= max_tokens for ids in encoded) / max(1, len(sentences)), 3),
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmoe.data.build.train_vocab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="corpus directory (default data/embedded)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="model prefix: writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--sample-sentences", type=int, default=DEFAULT_SAMPLE_SENTENCES)
    parser.add_argument("--measure", type=int, nargs="+", metavar="SIZE",
                        help="train one model per size in a temporary directory and print, per language, dev tokens per sentence, byte-fallback share and share fitting 32 tokens")
    args = parser.parse_args(argv)
    if not args.measure:
        train(corpus_dir=args.corpus, model_prefix=args.out, vocab_size=args.vocab_size,
              sample_sentences=args.sample_sentences)
        return 0
    table = {}
    with tempfile.TemporaryDirectory(prefix="mtmoe-spm-measure-") as work:
        # Each size is a full training: a bar on a terminal (disable=None) with the ETA of the rest.
        for size in tqdm(args.measure, desc="vocabulary sizes", unit="model", disable=None):
            path = train(corpus_dir=args.corpus, model_prefix=os.path.join(work, f"v{size}"), vocab_size=size,
                         sample_sentences=args.sample_sentences, log=log_line)
            table[size] = measure(path, corpus_dir=args.corpus)
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
