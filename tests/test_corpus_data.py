"""The committed embedded corpus (data/embedded): leak-free splits, every
language present in every split, counts that match stats.json and data/README.md."""

import gzip
import json
import os
import re

import pytest

from mtmoe.data.build import corpus_clean, corpus_write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data")
EMBEDDED = os.path.join(DATA, "embedded")


def _read(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


@pytest.fixture(scope="module")
def stats():
    with open(os.path.join(EMBEDDED, "stats.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def files(stats):
    """{split: {lang: rows}} for every language of stats.json."""
    return {split: {lang: _read(os.path.join(EMBEDDED, split, f"en-{lang}.tsv.gz")) for lang in stats["languages"]}
            for split in ("train", "dev", "test")}


def test_at_least_101_languages_besides_english(stats):
    assert len(stats["languages"]) >= 101
    assert "en" not in stats["languages"]
    code = re.compile(r"[a-z]{2,3}(-[A-Z][a-z]{3}|-[A-Z]{2})?")
    assert all(code.fullmatch(lang) for lang in stats["languages"])


def test_no_dev_or_test_english_in_any_train_file(files):
    held_out = {corpus_clean.normalise_english(row[0])
                for split in ("dev", "test") for rows in files[split].values() for row in rows}
    leaks = [(lang, row[0]) for lang, rows in files["train"].items() for row in rows
             if corpus_clean.normalise_english(row[0]) in held_out]
    assert leaks == []


def test_every_language_has_train_dev_and_test(files):
    for split in ("train", "dev", "test"):
        empty = [lang for lang, rows in files[split].items() if not rows]
        assert empty == [], split


def test_rows_are_two_clean_columns(files):
    for split, by_lang in files.items():
        for lang, rows in by_lang.items():
            bad = [row for row in rows if len(row) != 2 or not row[0] or not row[1] or row[0] == row[1]]
            assert bad == [], (split, lang, bad[:3])
            if split != "train":
                assert len({row[0] for row in rows}) == len(rows) <= corpus_write.EVAL_CAP, (split, lang)


def test_counts_match_stats_and_readme(stats, files):
    for split in ("train", "dev", "test"):
        assert {lang: len(rows) for lang, rows in files[split].items()} == {
            lang: row[split] for lang, row in stats["languages"].items()}
    with open(os.path.join(DATA, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    table = readme[readme.index(corpus_write.README_TABLE_START):readme.index(corpus_write.README_TABLE_END)]
    assert corpus_write.counts_table(stats) in table
    assert sorted(os.listdir(os.path.join(EMBEDDED, "train"))) == sorted(f"en-{lang}.tsv.gz" for lang in stats["languages"])


def test_multiway_test_set(stats, files):
    rows = _read(os.path.join(EMBEDDED, "multiway", "test.tsv.gz"))
    header, body = rows[0], rows[1:]
    assert header[0] == "en" and header[1:] == stats["multiway"]["languages"] and len(body) == stats["multiway"]["sentences"]
    assert len(header[1:]) >= 20 and len(body) >= 100
    tests = {lang: dict(files["test"][lang]) for lang in header[1:]}
    for row in body:
        assert len(row) == len(header)
        for lang, cell in zip(header[1:], row[1:]):
            if cell:
                assert tests[lang].get(row[0]) == cell     # each cell is also in that language's test file


def test_corpus_and_vocabulary_stay_small():
    """The embedded corpus and vocabulary stay under ~25 MB in git (the shipped model in
    data/models/ has its own budget of ~60 MB)."""
    folders = [os.path.join(DATA, "embedded"), os.path.join(DATA, "vocab")]
    total = sum(
        os.path.getsize(os.path.join(root, name))
        for folder in folders
        for root, _, names in os.walk(folder)
        for name in names
    )
    assert total < 25 * 1024 * 1024
