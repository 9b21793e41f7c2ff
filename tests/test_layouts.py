"""mtmoe/data/layouts.py: split names and the OPUS-100 / FLORES-200 / embedded layouts; mtmoe.data is TensorFlow-free."""

import subprocess
import sys
from pathlib import Path

import pytest

from mtmoe.data import layouts

EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_split_names_and_their_files():
    assert layouts.split_name("dev") == layouts.split_name("validation") == "validation"
    with pytest.raises(ValueError, match="use train, validation"):
        layouts.split_name("devtest")
    assert layouts.embedded_file("/c", "validation", "pt-BR") == "/c/dev/en-pt-BR.tsv.gz"
    assert layouts.embedded_file("/c", "dev", "de") == layouts.embedded_file("/c", "validation", "de")
    assert str(layouts.multiway_file("/c")) == "/c/multiway/test.tsv.gz"


def test_embedded_files_by_language():
    files = layouts.embedded_files(EVAL_FIXTURES / "embedded", "test")
    assert sorted(files) == ["de", "fr", "th", "zh-Hans"] and files["de"].name == "en-de.tsv.gz"
    with pytest.raises(FileNotFoundError, match="mtmoe.data.build.build_corpus"):
        layouts.embedded_files(EVAL_FIXTURES, "test")


@pytest.mark.parametrize("root", ["opus-100-corpus", "opus-100-corpus/v1.0", "opus-100-corpus/v1.0/supervised", "."])
def test_opus100_found_from_any_folder_on_its_path(root):
    supervised = layouts.opus100_supervised_dir(EVAL_FIXTURES / root)
    assert sorted(layouts.opus100_pair_dirs(supervised)) == ["de", "fr"]
    english, german = layouts.opus100_files(supervised, "de", "test")   # the folder is de-en
    assert (english.name, german.name) == ("opus.de-en-test.en", "opus.de-en-test.de") and german.is_file()
    english, french = layouts.opus100_files(supervised, "fr", "validation")  # and en-fr
    assert (english.name, french.name) == ("opus.en-fr-dev.en", "opus.en-fr-dev.fr") and french.is_file()


def test_flores200_split_folders_and_both_file_namings(tmp_path):
    assert layouts.flores200_split_dir(EVAL_FIXTURES, "test").name == "devtest"
    assert layouts.flores200_split_dir(EVAL_FIXTURES / "flores200_dataset", "dev").name == "dev"
    with pytest.raises(ValueError, match="no train split"):
        layouts.flores200_split_dir(EVAL_FIXTURES, "train")
    with pytest.raises(FileNotFoundError, match="no FLORES-200 folder.*download https://"):
        layouts.flores200_split_dir(tmp_path, "test")
    (tmp_path / "devtest").mkdir()
    (tmp_path / "devtest" / "deu_Latn.devtest").write_text("x\n")
    (tmp_path / "devtest" / "devtest.fra_Latn").write_text("y\n")
    assert sorted(layouts.flores200_files(layouts.flores200_split_dir(tmp_path, "test"))) == ["deu_Latn", "fra_Latn"]


def test_data_layer_imports_no_tensorflow_seqio_or_jax():
    script = ("import sys, mtmoe.data.languages, mtmoe.data.layouts, mtmoe.data.readers, mtmoe.data.vocabulary, "
              "mtmoe.data.build.build_corpus, mtmoe.data.build.train_vocab, eval.data_sources\n"
              "print(sorted(m for m in ('tensorflow', 'seqio', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "[]"
