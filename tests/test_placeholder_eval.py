"""mtmoe/data/build/placeholder_eval.py: the cell format, which entries qualify, and the committed set."""

import gzip
import json
import os

import pytest

from mtmoe.data.build import placeholder_eval
from mtmoe.data.build.placeholder_eval import escape_cell, qualifies, read_eval_set, unescape_cell

SET_DIR = os.path.dirname(placeholder_eval.DEFAULT_OUT)


@pytest.mark.parametrize("text", ["plain", "two\nlines\n", "tab\there", "a literal \\n", "\\\\n\r\n", ""])
def test_cells_hold_no_tab_or_line_break_and_read_back_exactly(text):
    cell = escape_cell(text)
    assert "\t" not in cell and "\n" not in cell and "\r" not in cell
    assert unescape_cell(cell) == text


def test_which_entries_qualify():
    assert qualifies("Could not open %s", ["Konnte %s nicht öffnen", "Impossible d’ouvrir %s"])
    assert qualifies("%s of %d", ["%d の %s"])                       # spans may move
    assert not qualifies("Open the file", ["Datei öffnen"])           # no span
    assert not qualifies("%s: %s", ["%s : %s"])                        # nothing to translate
    assert not qualifies("Could not open %s", ["Öffnen fehlgeschlagen"])  # the reference drops the span
    assert not qualifies("Open %s %s", ["%s öffnen"])                 # ... or one of two
    assert not qualifies("_Open %s", ["_Öffnen %s"])                   # an accelerator
    assert not qualifies("&Open %s", ["Ö&ffnen %s"])
    assert qualifies("Save &amp; close %s", ["Speichern &amp; schließen %s"])  # an entity is no accelerator
    assert not qualifies("x" * placeholder_eval.MAX_CHARS + " %s", ["y %s"])


def test_read_eval_set_reads_what_build_writes(tmp_path):
    path = tmp_path / "set.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("package\ten\tde\tja\n")
        f.write("gimp-data\t" + "\t".join(escape_cell(t) for t in ["Open %s\n", "%s öffnen\n", "%s を開く\n"]) + "\n")
    [segment] = read_eval_set(str(path))
    assert segment == placeholder_eval.Segment("gimp-data", "Open %s\n", {"de": "%s öffnen\n", "ja": "%s を開く\n"})
    with pytest.raises(FileNotFoundError, match="python -m mtmoe.data.build.placeholder_eval"):
        read_eval_set(str(tmp_path / "missing.tsv.gz"))


def test_the_committed_set_is_what_its_sources_say():
    segments = read_eval_set()
    with open(os.path.join(SET_DIR, "sources.json")) as f:
        sources = json.load(f)
    assert len(segments) == sources["segments"]
    assert list(segments[0].references) == sources["languages"] == list(placeholder_eval.LANGUAGES)
    assert {segment.package for segment in segments} == set(sources["packages"]) == set(placeholder_eval.PACKAGES)
    assert not any("thunderbird" in package for package in sources["packages"])  # reserved for an external evaluation
    assert len({segment.english for segment in segments}) == len(segments)
    for segment in segments:
        assert qualifies(segment.english, list(segment.references.values())), segment.english
