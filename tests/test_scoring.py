"""mtmoe.scoring: the numbers equal the sacrebleu command line's on the same text."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece

from mtmoe import scoring

SACREBLEU_CLI = str(Path(sys.executable).parent / "sacrebleu")

# Real-looking sentences with partial overlap, so BLEU is neither 0 nor 100.
REFS_DE = ["Die Datei wurde nicht gefunden.", "Klicken Sie auf OK, um fortzufahren.",
           "Das Dokument enthält keine Tabellen.", "Speichern unter …"]
HYPS_DE = ["Die Datei wurde nicht gefunden.", "Klicken Sie OK, um weiter zu machen.",
           "Das Dokument hat keine Tabelle.", "Speichern als"]
REFS_ZH = ["找不到该文件。", "单击确定以继续。", "文档中没有表格。"]
HYPS_ZH = ["找不到文件。", "点击确定继续。", "文档中没有表格。"]
REFS_TH = ["ไม่พบแฟ้ม", "คลิกตกลงเพื่อดำเนินการต่อ", "เอกสารไม่มีตาราง"]
HYPS_TH = ["ไม่พบไฟล์", "คลิกตกลงเพื่อทำต่อ", "เอกสารไม่มีตาราง"]


def sacrebleu_cli(tmp_path, hyps, refs, tokenize, *, env=None):
    """[bleu, chrf] from `sacrebleu REF -i HYP -b -m bleu chrf --chrf-word-order 2 --tokenize T`."""
    hyp_file, ref_file = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp_file.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    ref_file.write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    out = subprocess.run(
        [SACREBLEU_CLI, str(ref_file), "-i", str(hyp_file), "-b", "-m", "bleu", "chrf",
         "--chrf-word-order", "2", "--tokenize", tokenize, "-w", "6"],
        check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.parametrize("hyps,refs,lang,tokenize", [
    (HYPS_DE, REFS_DE, "de", "13a"),
    (HYPS_ZH, REFS_ZH, "zh-Hans", "zh"),
    (HYPS_TH, REFS_TH, "th", "char"),
])
def test_scores_equal_sacrebleu_command_line(tmp_path, hyps, refs, lang, tokenize):
    result = scoring.score_pair(hyps, refs, target_lang=lang)
    bleu, chrf = sacrebleu_cli(tmp_path, hyps, refs, tokenize)
    assert 0 < result["bleu"] < 100 and 0 < result["chrf"] < 100
    assert result["bleu"] == pytest.approx(bleu, abs=1e-6)
    assert result["chrf"] == pytest.approx(chrf, abs=1e-6)
    assert result["n"] == len(refs)
    assert f"tok:{tokenize}|" in result["bleu_signature"]
    assert "nw:2" in result["chrf_signature"]


def test_perfect_and_disjoint_translations():
    assert scoring.score_pair(REFS_DE, REFS_DE, target_lang="de")["bleu"] == pytest.approx(100.0)
    assert scoring.score_pair(["xyz qqq"] * 4, REFS_DE, target_lang="de")["bleu"] == 0.0


@pytest.mark.parametrize("lang,expected", [
    ("de", "13a"), ("en", "13a"), ("pt-BR", "13a"), ("sr-Latn", "13a"), ("ru", "13a"),
    ("zh", "zh"), ("zh-Hans", "zh"), ("zh-Hant", "zh"), ("yue", "zh"),
    ("th", "char"), ("lo", "char"), ("km", "char"), ("my", "char"), ("bo", "char"), ("dz", "char"),
    ("pa-Arab", "13a"), ("zh-Latn", "13a"), ("ja-Latn", "13a"), ("ca-valencia", "13a"),
])
def test_bleu_tokenizer_for(lang, expected):
    assert scoring.bleu_tokenizer_for(lang) == expected


def test_mecab_tokenizers_only_when_importable(monkeypatch):
    monkeypatch.setattr(scoring, "_importable", lambda *modules: False)
    assert scoring.bleu_tokenizer_for("ja") == "char"
    assert scoring.bleu_tokenizer_for("ko") == "char"
    monkeypatch.setattr(scoring, "_importable", lambda *modules: True)
    assert scoring.bleu_tokenizer_for("ja") == "ja-mecab"
    assert scoring.bleu_tokenizer_for("ko") == "ko-mecab"


def test_bad_counts_and_empty_sets_say_what_is_wrong():
    with pytest.raises(ValueError, match="3 hypotheses but 4 references"):
        scoring.score_pair(HYPS_DE[:3], REFS_DE, target_lang="de")
    with pytest.raises(ValueError, match="empty"):
        scoring.score_pair([], [], target_lang="de")


def test_line_breaks_inside_a_sentence_become_spaces():
    assert scoring.one_line(" a\nb\r\nc\u2028d ") == "a b c d"
    split = scoring.score_pair(["Die Datei\nwurde nicht gefunden."], ["Die Datei wurde nicht gefunden."],
                               target_lang="de")
    assert split["bleu"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def tiny_spm_model(tmp_path_factory):
    """A small SentencePiece model standing in for the FLORES-200 one (never downloaded)."""
    directory = tmp_path_factory.mktemp("spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter((REFS_DE + HYPS_DE) * 20), model_prefix=str(directory / "tiny"),
        vocab_size=50, character_coverage=1.0, minloglevel=2)
    return directory / "tiny.model"


def test_spbleu_equals_command_line_with_the_same_model(tmp_path, tiny_spm_model):
    result = scoring.score_pair(HYPS_DE, REFS_DE, target_lang="de", spm_model=str(tiny_spm_model))
    # The command line looks for the model under $SACREBLEU/models/ and only downloads when absent.
    (tmp_path / "models").mkdir()
    os.symlink(tiny_spm_model, tmp_path / "models" / "flores200sacrebleuspm")
    env = dict(os.environ, SACREBLEU=str(tmp_path))
    spbleu, _ = sacrebleu_cli(tmp_path, HYPS_DE, REFS_DE, "flores200", env=env)
    assert result["spbleu"] == pytest.approx(spbleu, abs=1e-6)
    assert result["spbleu"] != pytest.approx(result["bleu"])
    assert "tok:flores200|" in result["spbleu_signature"]


def test_spbleu_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        scoring.score_pair(HYPS_DE, REFS_DE, target_lang="de", spm_model=str(tmp_path / "absent.model"))
