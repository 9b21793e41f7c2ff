"""mtmoe.scoring: the numbers equal the sacrebleu command line's on the same text."""

import json
import os
import re
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
REFS_JA = ["ファイルが見つかりません。", "続行するには OK をクリックしてください。", "文書には表がありません。"]
HYPS_JA = ["ファイルが見つかりませんでした。", "続けるには OK をクリックしてください。", "文書には表がありません。"]
REFS_KO = ["파일을 찾을 수 없습니다.", "계속하려면 확인을 클릭하십시오.", "문서에 표가 없습니다."]
HYPS_KO = ["파일을 찾을 수 없어요.", "계속하려면 확인을 누르십시오.", "문서에 표가 없습니다."]


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
    (HYPS_JA, REFS_JA, "ja", "ja-mecab"),
    (HYPS_KO, REFS_KO, "ko", "ko-mecab"),
])
def test_scores_equal_sacrebleu_command_line(tmp_path, hyps, refs, lang, tokenize):
    result = scoring.score_pair(hyps, refs, target_lang=lang)
    bleu, chrf = sacrebleu_cli(tmp_path, hyps, refs, tokenize)
    assert 0 < result["bleu"] < 100 and 0 < result["chrf"] < 100
    assert result["bleu"] == pytest.approx(bleu, abs=1e-6)
    assert result["chrf"] == pytest.approx(chrf, abs=1e-6)
    assert result["n"] == len(refs)
    # MeCab's tokenizers sign with their version and dictionary: tok:ja-mecab-0.996-IPA.
    assert f"tok:{tokenize}{'-' if tokenize.endswith('mecab') else '|'}" in result["bleu_signature"]
    assert "nw:2" in result["chrf_signature"]


def test_japanese_and_korean_use_mecab_whatever_the_script_subtag():
    for lang in ("ja", "ja-Jpan"):
        assert "|tok:ja-mecab-" in scoring.score_pair(HYPS_JA, REFS_JA, target_lang=lang)["bleu_signature"]
    for lang in ("ko", "ko-Kore", "ko-Hang"):
        assert "|tok:ko-mecab-" in scoring.score_pair(HYPS_KO, REFS_KO, target_lang=lang)["bleu_signature"]


def test_mecab_that_cannot_load_is_one_line_saying_to_reinstall(monkeypatch):
    from sacrebleu.tokenizers import tokenizer_ja_mecab  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(tokenizer_ja_mecab, "MeCab", None)  # what sacreBLEU sets when `import MeCab` fails
    with pytest.raises(ValueError, match=r"ja-mecab tokenizer, which could not load .*sacrebleu\[ja,ko\]") as error:
        scoring.score_pair(HYPS_JA, REFS_JA, target_lang="ja")
    assert "\n" not in str(error.value)


def test_perfect_and_disjoint_translations():
    assert scoring.score_pair(REFS_DE, REFS_DE, target_lang="de")["bleu"] == pytest.approx(100.0)
    assert scoring.score_pair(["xyz qqq"] * 4, REFS_DE, target_lang="de")["bleu"] == 0.0


@pytest.mark.parametrize("lang,expected", [
    ("de", "13a"), ("en", "13a"), ("pt-BR", "13a"), ("sr-Latn", "13a"), ("ru", "13a"),
    ("zh", "zh"), ("zh-Hans", "zh"), ("zh-Hant", "zh"), ("yue", "zh"),
    ("th", "char"), ("lo", "char"), ("km", "char"), ("my", "char"), ("bo", "char"), ("dz", "char"),
    ("pa-Arab", "13a"), ("zh-Latn", "13a"), ("ja-Latn", "13a"), ("ca-valencia", "13a"),
    ("ja", "ja-mecab"), ("ja-Jpan", "ja-mecab"), ("ko", "ko-mecab"), ("ko-Kore", "ko-mecab"), ("ko-Latn", "13a"),
])
def test_bleu_tokenizer_for(lang, expected):
    assert scoring.bleu_tokenizer_for(lang) == expected


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


def sacrebleu_paired_bs_cli(tmp_path, hyps, baseline, refs, tokenize):
    """[bleu p, chrf p] from `sacrebleu REF -i BASELINE SYSTEM --paired-bs ...` (its table prints p to 4 places)."""
    for name, lines in (("ref", refs), ("baseline", baseline), ("system", hyps)):
        (tmp_path / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = subprocess.run(
        [SACREBLEU_CLI, str(tmp_path / "ref.txt"), "-i", str(tmp_path / "baseline.txt"), str(tmp_path / "system.txt"),
         "--paired-bs", "-m", "bleu", "chrf", "--chrf-word-order", "2", "--tokenize", tokenize, "-q", "-f", "text"],
        check=True, capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "SACREBLEU_SEED"})
    return [float(p) for p in re.findall(r"\(p = ([0-9.]+)\)", out.stdout)]


def test_paired_bootstrap_equals_the_sacrebleu_command_line(tmp_path):
    one_fixed = HYPS_DE[:3] + [REFS_DE[3]]  # the last sentence now right, the others as the baseline's
    p_values = scoring.paired_bootstrap(one_fixed, HYPS_DE, REFS_DE, target_lang="de")
    assert 0.05 < p_values["bleu"] < 1 and 0.05 < p_values["chrf"] < 1  # one sentence of four: not significant
    assert [p_values["bleu"], p_values["chrf"]] == pytest.approx(
        sacrebleu_paired_bs_cli(tmp_path, one_fixed, HYPS_DE, REFS_DE, "13a"), abs=5e-5)


def test_paired_bootstrap_identical_and_clearly_better_outputs():
    assert scoring.paired_bootstrap(HYPS_DE, list(HYPS_DE), REFS_DE, target_lang="de") == {"bleu": 1.0, "chrf": 1.0}
    # Perfect output against a baseline 60 BLEU points below: no resampled difference can exceed
    # the resamples' mean difference by 60 (BLEU is at most 100), so p is the test's floor,
    # 1 / (1000 resamples + 1).
    p_values = scoring.paired_bootstrap(REFS_DE, HYPS_DE, REFS_DE, target_lang="de")
    assert p_values == {"bleu": pytest.approx(1 / 1001), "chrf": pytest.approx(1 / 1001)}


def test_paired_bootstrap_seed_is_fixed_whatever_the_environment(monkeypatch):
    one_fixed = HYPS_DE[:3] + [REFS_DE[3]]
    expected = scoring.paired_bootstrap(one_fixed, HYPS_DE, REFS_DE, target_lang="de")
    monkeypatch.setenv("SACREBLEU_SEED", "none")  # sacreBLEU would draw a fresh seed from the OS
    assert scoring.paired_bootstrap(one_fixed, HYPS_DE, REFS_DE, target_lang="de") == expected
    assert os.environ["SACREBLEU_SEED"] == "none"


def test_paired_bootstrap_needs_one_output_per_reference():
    with pytest.raises(ValueError, match="3 hypotheses but 4 references"):
        scoring.paired_bootstrap(HYPS_DE, HYPS_DE[:3], REFS_DE, target_lang="de")
