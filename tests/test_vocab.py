"""The committed SentencePiece vocabulary (data/vocab/mtmoe.model) and mtmoe/data/vocabulary.py."""

import ast
import glob
import gzip
import json
import os

import pytest

from mtmoe.data import vocabulary as vocab
from mtmoe.data.build import train_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = os.path.join(REPO, "data", "embedded")


def _normalised(sp, text):
    """The text as the model's normaliser leaves it (NFKC, spaces collapsed), in plain spaces."""
    return sp.normalize(text).replace("▁", " ").strip()


@pytest.fixture(scope="module")
def sp():
    return vocab.load_sentencepiece()


@pytest.fixture(scope="module")
def corpus_languages():
    with open(os.path.join(EMBEDDED, "stats.json"), encoding="utf-8") as f:
        return sorted(json.load(f)["languages"])


def test_special_ids_follow_t5(sp):
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.id_to_piece(0) == "<pad>" and sp.id_to_piece(1) == "</s>"


def test_every_language_tag_is_one_piece(sp, corpus_languages):
    assert vocab.tag_languages() == ["en", *corpus_languages]
    for lang in ["en", *corpus_languages]:
        tag = vocab.language_tag(lang)
        pieces = sp.encode(tag + " Hello", out_type=str)
        assert tag in pieces[:2] and "".join(pieces[:2]).strip("▁") == tag, (lang, pieces)
        assert sp.piece_to_id(tag) != sp.unk_id()


def test_round_trip_every_language(sp, corpus_languages):
    """decode(encode(x)) == x up to the model's NFKC normalisation, on the first
    dev sentences of every language."""
    failures = []
    for lang in ["en", *corpus_languages]:
        name = "en-de" if lang == "en" else f"en-{lang}"
        with gzip.open(os.path.join(EMBEDDED, "dev", f"{name}.tsv.gz"), "rt", encoding="utf-8") as f:
            texts = [line.rstrip("\n").split("\t")[0 if lang == "en" else 1] for _, line in zip(range(20), f)]
        assert texts, lang
        for text in texts:
            if sp.decode(sp.encode(text)) != _normalised(sp, text):
                failures.append((lang, text))
    assert failures == []


def test_byte_fallback_means_no_unknowns(sp):
    text = "Ǆemal 𝄞 ᠮᠣᠩᠭᠣᠯ 🦜"
    ids = sp.encode(text)
    assert sp.unk_id() not in ids
    assert sp.decode(ids) == _normalised(sp, text) == "DŽemal 𝄞 ᠮᠣᠩᠭᠣᠯ 🦜"   # NFKC splits the Ǆ ligature


def test_model_vocab_size_and_bad_tags(sp):
    size = vocab.model_vocab_size()
    assert size % 128 == 0 and size - 128 < sp.vocab_size() + 100 <= size
    with pytest.raises(ValueError, match="bad language code"):
        vocab.language_tag("de de")
    with pytest.raises(FileNotFoundError, match="mtmoe.data.build.train_vocab"):
        vocab.load_sentencepiece("/nonexistent/mtmoe.model")


def test_vocab_module_does_not_import_seqio_at_top_level():
    with open(vocab.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for node in top_level for alias in node.names} | {
        (node.module or "").split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom)}
    assert not names & {"seqio", "tensorflow", "sentencepiece"}


def test_sampling_gives_small_languages_a_share():
    counts = train_vocab.sampling_counts({"big": 100_000, "small": 1_000, "tiny": 10}, total=10_000)
    assert counts["tiny"] == 10                          # capped at what it has
    assert counts["small"] > 1_000 * 10_000 / 101_010    # more than its proportional share
    assert sum(counts.values()) == pytest.approx(10_000, abs=3)


def test_committed_vocabulary_files_exist():
    assert os.path.getsize(os.path.join(REPO, "data", "vocab", "mtmoe.model")) > 100_000
    assert glob.glob(os.path.join(REPO, "data", "vocab", "mtmoe.vocab"))
