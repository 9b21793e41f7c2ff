"""mtmoe/data/readers.py: lenient training reads count what they skip; strict reads name the line."""

import gzip
from pathlib import Path

import pytest

from mtmoe.data import readers

EMBEDDED = Path(__file__).parent / "fixtures" / "tasks" / "embedded"


def test_bad_lines_are_skipped_and_counted():
    path = EMBEDDED / "train" / "en-de.tsv.gz"
    pairs = list(readers.read_tsv(str(path)))
    assert len(pairs) == 12 and pairs[0] == ("Save the file", "Datei speichern")
    assert readers.bad_line_counts(path) == {"empty": 1, "no_tab": 1, "invalid_utf8": 1, "too_long": 1}
    assert str(path) in readers.bad_line_counts()


def test_unaligned_and_bad_parallel_lines(tmp_path):
    english, german = tmp_path / "x.en", tmp_path / "x.de"
    english.write_bytes(b"one\n\ntwo\nthree\nfour\n")
    german.write_bytes(b"eins\nleer\n\xffzwei\ndrei\n")
    assert list(readers.read_aligned([str(english), str(german)])) == [("one", "eins"), ("three", "drei")]
    assert readers.bad_line_counts(english) == {"empty": 1, "invalid_utf8": 1, "unaligned": 1}


def test_count_lines_plain_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"1\n2\n3\n")
    with gzip.open(tmp_path / "a.txt.gz", "wb") as handle:
        handle.write(b"1\n2\n")
    assert readers.count_lines(str(tmp_path / "a.txt")) == 3
    assert readers.count_lines(str(tmp_path / "a.txt.gz")) == 2


def test_strict_lines_keep_every_line_and_name_a_bad_byte(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_bytes(b"a\tb\r\n\nc\td\n")
    assert list(readers.numbered_lines(path)) == [(1, "a\tb\r"), (2, ""), (3, "c\td")]
    path.write_bytes(b"ok\n\xff\n")
    with pytest.raises(readers.DataError, match=r"test.tsv: not UTF-8 .*re-encode it as UTF-8"):
        list(readers.numbered_lines(path))


def test_aligned_lines_refuse_files_of_different_lengths(tmp_path):
    english, german = tmp_path / "x.en", tmp_path / "x.de"
    english.write_text("one\n\ntwo\n", encoding="utf-8")
    german.write_text("eins\n\n", encoding="utf-8")
    with pytest.raises(readers.DataError, match="x.en has 3 lines but .*x.de has 2: .*line-aligned"):
        readers.aligned_lines([english, german])
    german.write_text("eins\n\nzwei\n", encoding="utf-8")
    assert readers.aligned_lines([english, german]) == [["one", "", "two"], ["eins", "", "zwei"]]
    with pytest.raises(readers.DataError, match="x.fr is missing"):
        readers.aligned_lines([english, tmp_path / "x.fr"])
