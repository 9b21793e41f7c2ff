"""eval/per_language_bleu.py: scores, outputs, resuming and bad input, on a fake translator.

The fake translator returns the reference, shortened by its last three
characters for every other sentence, so each pair gets a BLEU score strictly
between 0 and 100 that the sacrebleu command line can recompute from the
written hyps/ and refs/ files. The real-checkpoint run at the end uses the
trainer's `tiny_checkpoint` fixture (tests/conftest.py).
"""

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eval import buckets, data_sources, per_language_bleu, report
from eval.progress import Progress

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "eval"
EMBEDDED = FIXTURES / "embedded"
SACREBLEU_CLI = str(Path(sys.executable).parent / "sacrebleu")
FIXTURE_LANGS = ["de", "fr", "th", "zh-Hans"]


def _reference_table():
    source = data_sources.open_source("embedded", split="test", embedded_dir=EMBEDDED)
    table = {}
    for src, tgt in source.default_pairs(FIXTURE_LANGS):
        test_set = source.load(src, tgt)
        table.update({(tgt, s): r for s, r in zip(test_set.sources, test_set.references)})
    return table


REFERENCES = _reference_table()


class FakeTranslator:
    """Translator's interface; records every translate call."""

    def __init__(self, languages=("en", *FIXTURE_LANGS), *, step=3, short_by=3, wrong_count_into=None):
        self.languages = list(languages)
        self.source_languages = list(languages)
        self.step = step
        self.short_by = short_by
        self.wrong_count_into = wrong_count_into
        self.calls = []

    def translate(self, texts, target_lang, *, source_lang=None, beam_size=4, max_length=None):
        self.calls.append((source_lang, target_lang, len(texts), beam_size))
        outputs = []
        for text in texts:
            reference = REFERENCES.get((target_lang, text), text)
            outputs.append(reference[:len(reference) - self.short_by] if len(text) % 2 else reference)
        return outputs[:-1] if target_lang == self.wrong_count_into else outputs


def run(tmp_path, translator=None, **kwargs):
    kwargs.setdefault("output", tmp_path / "out")
    kwargs.setdefault("embedded_dir", EMBEDDED)
    return per_language_bleu.run(translator=translator or FakeTranslator(), **kwargs)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """All 8 fixture pairs scored once; tests below read its files."""
    tmp_path = tmp_path_factory.mktemp("full")
    translator = FakeTranslator()
    return run(tmp_path, translator, batch_size=3), translator


def sacrebleu_cli(out_dir, pair, tokenize):
    output = subprocess.run(
        [SACREBLEU_CLI, str(out_dir / "refs" / f"{pair}.txt"), "-i", str(out_dir / "hyps" / f"{pair}.txt"),
         "-b", "-m", "bleu", "chrf", "--chrf-word-order", "2", "--tokenize", tokenize, "-w", "6"],
        check=True, capture_output=True, text=True)
    return json.loads(output.stdout)


def test_scores_equal_the_sacrebleu_command_line_on_the_written_files(full_run):
    outcome, _ = full_run
    results = json.loads((outcome.out_dir / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["pairs"]) == sorted(["en-de", "de-en", "en-fr", "fr-en", "en-th", "th-en",
                                               "en-zh-Hans", "zh-Hans-en"])
    tokenizers = set()
    for pair, entry in results["pairs"].items():
        tokenize = entry["bleu_signature"].split("tok:")[1].split("|")[0]
        tokenizers.add(tokenize)
        bleu, chrf = sacrebleu_cli(outcome.out_dir, pair, tokenize)
        assert 0 < entry["bleu"] < 100, pair
        assert entry["bleu"] == pytest.approx(bleu, abs=1e-5), pair
        assert entry["chrf"] == pytest.approx(chrf, abs=1e-5), pair
    assert tokenizers == {"13a", "char", "zh"}


def test_outputs_exist_and_parse(full_run):
    outcome, translator = full_run
    out = outcome.out_dir
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["step"] == 3 and results["beam_size"] == 4 and results["split"] == "test"
    for pair, entry in results["pairs"].items():
        assert {"bleu", "chrf", "n", "bleu_signature", "chrf_signature"} <= set(entry)
        hyps = report.read_lines(out / "hyps" / f"{pair}.txt")
        refs = report.read_lines(out / "refs" / f"{pair}.txt")
        assert len(hyps) == len(refs) == entry["n"]
    assert results["pairs"]["en-de"]["n"] == 8 and results["pairs"]["th-en"]["n"] == 6
    assert all(n <= 3 for _, _, n, _ in translator.calls)  # --batch_size 3
    with open(out / "results.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["pair"] for row in rows} == set(results["pairs"])
    assert {row["pair"]: float(row["bleu"]) for row in rows}["en-fr"] == pytest.approx(
        results["pairs"]["en-fr"]["bleu"])
    markdown = (out / "results.md").read_text(encoding="utf-8")
    # Sorted by training size: de 56,064, fr 48,000, th 15,000, zh-Hans 6,000.
    order = [markdown.index(f"\n| {lang} |") for lang in ("de", "fr", "th", "zh-Hans")]
    assert order == sorted(order)
    assert "high: more than 30,000 training pairs" in markdown and "very low: at most 10,000" in markdown
    assert "English→X" in markdown and "X→English" in markdown
    assert (out / "per_language_bleu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_averages_and_buckets_by_hand(full_run):
    results = full_run[0].results
    pairs = results["pairs"]
    assert [results["languages"][lang]["bucket"] for lang in FIXTURE_LANGS] == ["high", "high", "low", "very_low"]
    into = [pairs[f"en-{lang}"]["bleu"] for lang in FIXTURE_LANGS]
    assert results["averages"]["en-xx"]["bleu"] == pytest.approx(sum(into) / 4)
    assert results["averages"]["en-xx"]["pairs"] == 4
    high = [pairs[p]["chrf"] for p in ("en-de", "de-en", "en-fr", "fr-en")]
    assert results["averages"]["buckets"]["high"]["both"]["chrf"] == pytest.approx(sum(high) / 4)
    assert results["averages"]["buckets"]["very_low"]["xx-en"]["bleu"] == pytest.approx(pairs["zh-Hans-en"]["bleu"])


def test_a_second_run_decodes_nothing_and_an_interrupted_one_resumes(tmp_path):
    first = run(tmp_path, pairs="en-de,de-en,en-th")
    assert first.decoded_pairs == ["en-de", "de-en", "en-th"]
    again = FakeTranslator()
    second = run(tmp_path, again, pairs="en-de,de-en,en-th")
    assert again.calls == [] and second.decoded_pairs == []
    assert second.results["pairs"] == first.results["pairs"]

    # An interruption after two pairs: results.json lacks the third, which alone is decoded.
    path = tmp_path / "out" / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    del results["pairs"]["en-th"]
    path.write_text(json.dumps(results), encoding="utf-8")
    resumed = FakeTranslator()
    third = run(tmp_path, resumed, pairs="en-de,de-en,en-th")
    assert third.decoded_pairs == ["en-th"] and {call[1] for call in resumed.calls} == {"th"}

    redo = FakeTranslator()
    assert run(tmp_path, redo, pairs="en-de", overwrite=True).decoded_pairs == ["en-de"]
    assert sorted(json.loads(path.read_text(encoding="utf-8"))["pairs"]) == ["en-de"]
    assert not (tmp_path / "out" / "hyps" / "en-th.txt").exists()


def test_resuming_with_other_settings_is_refused(tmp_path):
    run(tmp_path, pairs="en-de")
    with pytest.raises(per_language_bleu.UsageError, match="beam_size 4.*beam_size 2.*--overwrite"):
        run(tmp_path, pairs="en-de", beam_size=2)


def _one_line(message):
    assert "\n" not in message and len(message) < 400, message
    return message


def test_pairs_not_trained_and_unknown_codes_are_reported_and_the_rest_scored(tmp_path):
    translator = FakeTranslator(languages=("en", "de", "fr"))
    outcome = run(tmp_path, translator, pairs="en-de,en-th,th-en,en-xq,en-fr")
    assert sorted(outcome.results["pairs"]) == ["en-de", "en-fr"]
    assert outcome.exit_code == 1
    errors = [_one_line(e) for e in outcome.errors]
    assert any("en-th" in e and "not trained to translate into 'th'" in e for e in errors)
    assert any("th-en" in e and "not trained to translate from 'th'" in e for e in errors)
    assert any("en-xq" in e and "unknown language code 'xq'" in e for e in errors)
    assert len(errors) == 3
    assert (tmp_path / "out" / "results.json").is_file()


def test_pairs_in_other_spellings_are_scored_under_the_checkpoint_codes(tmp_path):
    """`zh-CN` is the checkpoint's `zh-Hans`, `deu` and `de-DE` its `de`: each pair scored once, the log says so."""
    stream = io.StringIO()
    outcome = run(tmp_path, pairs="en-zh-CN,deu-en,en-de-DE,en-de", stream=stream)
    assert sorted(outcome.results["pairs"]) == ["de-en", "en-de", "en-zh-Hans"] and outcome.errors == []
    for note in ("--pairs en-zh-CN is scored as en-zh-Hans", "--pairs deu-en is scored as de-en",
                 "--pairs en-de-DE is scored as en-de"):
        assert note in stream.getvalue()


def test_only_the_trained_directions_count_when_the_checkpoint_lists_them(tmp_path):
    translator = FakeTranslator(languages=("en", "de", "fr"))
    translator.language_pairs = [("en", "de"), ("de", "en"), ("en", "fr")]
    outcome = run(tmp_path, translator)
    assert sorted(outcome.results["pairs"]) == ["de-en", "en-de", "en-fr"] and outcome.errors == []
    refused = run(tmp_path, translator, pairs="fr-en", output=tmp_path / "other")
    (error,) = refused.errors
    assert "pair fr-en: the checkpoint was not trained on fr-en" in _one_line(error)


def test_a_checkpoint_sharing_no_pair_with_the_data(tmp_path):
    outcome = run(tmp_path, FakeTranslator(languages=("en", "xh")))
    assert outcome.results["pairs"] == {} and outcome.exit_code == 1
    (error,) = outcome.errors
    assert "share no language pair" in _one_line(error)
    assert json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["pairs"] == {}


def test_mismatched_hypothesis_count_is_reported_and_the_rest_scored(tmp_path):
    outcome = run(tmp_path, FakeTranslator(wrong_count_into="fr"), pairs="en-de,en-fr,fr-en")
    assert sorted(outcome.results["pairs"]) == ["en-de", "fr-en"]
    (error,) = outcome.errors
    assert "en-fr" in _one_line(error) and "returned 7 hypotheses for 8 sentences" in error
    assert not (tmp_path / "out" / "hyps" / "en-fr.txt").exists()


def _gzip(path, text):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)


def test_empty_test_set_and_line_without_tab_in_the_embedded_corpus(tmp_path):
    embedded = tmp_path / "embedded"
    shutil.copytree(EMBEDDED, embedded)
    _gzip(embedded / "test" / "en-is.tsv.gz", "")
    _gzip(embedded / "test" / "en-sv.tsv.gz", "Open\tÖppna\nSave Spara\n")
    translator = FakeTranslator(languages=("en", "de", "is", "sv"))
    outcome = run(tmp_path, translator, embedded_dir=embedded)
    assert sorted(outcome.results["pairs"]) == ["de-en", "en-de"]
    errors = [_one_line(e) for e in outcome.errors]
    assert sum("en-is.tsv.gz" in e and "is empty" in e for e in errors) == 2  # en-is and is-en
    assert sum("en-sv.tsv.gz line 2: no tab" in e for e in errors) == 2


def test_tsv_with_a_missing_column_stops_with_one_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("src_lang\ttgt_lang\tsrc\nen\tde\tOpen\n", encoding="utf-8")
    with pytest.raises(per_language_bleu.UsageError, match="lacks column 'tgt'") as error:
        run(tmp_path, data=f"tsv:{bad}")
    _one_line(str(error.value))


def test_tsv_lines_without_a_tab_are_reported_and_valid_pairs_scored(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    lines = (FIXTURES / "pairs.tsv").read_text(encoding="utf-8").splitlines()
    lines.insert(3, "a line without any tab")
    lines.append("fr\ten\tOnly three columns")  # known pair, broken line: fr-en must not be scored short
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outcome = run(tmp_path, data=f"tsv:{tsv}")
    assert sorted(outcome.results["pairs"]) == ["en-de"]
    assert outcome.results["pairs"]["en-de"]["n"] == 5
    errors = [_one_line(e) for e in outcome.errors]
    assert any("line 4: no tab" in e for e in errors)
    assert any("line 12: 3 columns" in e for e in errors) and any("fr-en has malformed lines (12)" in e for e in errors)


def test_not_a_checkpoint_directory(tmp_path, capsys):
    code = per_language_bleu.main(["--checkpoint", str(tmp_path / "missing"), "--output", str(tmp_path / "out")])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --checkpoint") and "no such directory" in line
    assert not (tmp_path / "out").exists()


def test_an_empty_directory_is_not_a_checkpoint(tmp_path):
    pytest.importorskip("mtmoe.translate", reason="Translator (trainer helper) not there yet")
    with pytest.raises(per_language_bleu.UsageError, match="not a usable checkpoint") as error:
        per_language_bleu.load_translator(tmp_path, step=None)
    _one_line(str(error.value))


def test_baseline_adds_deltas(tmp_path, full_run):
    baseline = full_run[0].out_dir / "results.json"
    outcome = run(tmp_path, FakeTranslator(short_by=0), baseline=baseline)
    deltas = outcome.results["baseline"]["delta_bleu"]
    base = json.loads(baseline.read_text(encoding="utf-8"))["pairs"]
    assert deltas["en-de"] == pytest.approx(100.0 - base["en-de"]["bleu"])
    assert all(delta > 0 for delta in deltas.values()) and len(deltas) == 8
    assert "Δ en→X BLEU" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    with pytest.raises(per_language_bleu.UsageError, match="--baseline"):
        run(tmp_path, baseline=tmp_path / "absent.json")


@pytest.mark.parametrize("spec", [f"flores200:{FIXTURES / 'flores200_dataset'}", f"flores200:{FIXTURES}",
                                  f"opus100:{FIXTURES / 'opus-100-corpus'}", "embedded"])
def test_every_reader_gives_the_same_test_sets(spec):
    source = data_sources.open_source(spec, split="test", embedded_dir=EMBEDDED)
    assert source.default_pairs(["de", "fr", "xh"]) == [("en", "de"), ("de", "en"), ("en", "fr"), ("fr", "en")]
    de_en = source.load("de", "en")
    assert de_en.sources[0] == "Die Datei wurde nicht gefunden." and de_en.references[0] == "The file could not be found."
    assert len(de_en) == 8 and len(source.load("en", "fr")) == 8


def test_multiway_pairs_without_english():
    source = data_sources.open_source("embedded", split="test", embedded_dir=EMBEDDED)
    de_th = source.load("de", "th")
    assert len(de_th) == 6 and de_th.references[0] == "ไม่พบแฟ้ม"
    with pytest.raises(data_sources.DataError, match="multi-way"):
        data_sources.open_source("embedded", split="dev", embedded_dir=EMBEDDED).load("de", "th")


@pytest.mark.parametrize("spec,message", [
    ("nonsense", "use embedded, flores200:DIR"), ("flores200:", "give the location"),
    ("opus100:/nonexistent", "no OPUS-100 folder"), ("tsv:/nonexistent.tsv", "not a file"),
])
def test_bad_data_values(spec, message):
    with pytest.raises(data_sources.DataError, match=message):
        data_sources.open_source(spec, split="test")


@pytest.mark.parametrize("pair,expected", [("en-de", ("en", "de")), ("zh-Hans-en", ("zh-Hans", "en")),
                                           ("en-pt-BR", ("en", "pt-BR")), ("sr-Latn-zh-Hant", ("sr-Latn", "zh-Hant")),
                                           ("ca-valencia-en", ("ca-valencia", "en"))])
def test_split_pair(pair, expected):
    assert buckets.split_pair(pair) == expected


def test_bucket_edges():
    edges = buckets.BucketEdges.parse("1000000,100000")
    assert [edges.bucket(n) for n in (1_000_001, 1_000_000, 100_001, 100_000, None)] == [
        "high", "low", "low", "very_low", "unknown"]
    for text in ("10,100", "abc", "5"):
        with pytest.raises(ValueError, match="HIGH,VERY_LOW"):
            buckets.BucketEdges.parse(text)


def test_resource_sizes_from_a_plain_file_and_nllb_edges(tmp_path):
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps({"de": 2_000_000, "fr": 50_000}), encoding="utf-8")
    outcome = run(tmp_path, pairs="en-de,en-fr,en-th", resource_sizes=sizes, bucket_edges="1000000,100000")
    assert {lang: info["bucket"] for lang, info in outcome.results["languages"].items()} == {
        "de": "high", "fr": "very_low", "th": "unknown"}
    markdown = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "high: more than 1,000,000 training pairs" in markdown and "| th | Thai | ? |" in markdown
    assert markdown.index("| de |") < markdown.index("| fr |") < markdown.index("| th |")
    with pytest.raises(per_language_bleu.UsageError, match="--resource_sizes .*no such file"):
        run(tmp_path, resource_sizes=tmp_path / "absent.json")
    with pytest.raises(per_language_bleu.UsageError, match="--bucket_edges"):
        run(tmp_path, bucket_edges="100,1000")


def test_spbleu_with_a_local_sentencepiece_model(tmp_path):
    model = REPO / "tests" / "fixtures" / "tasks" / "tiny.model"  # any SentencePiece model stands in for FLORES'
    outcome = run(tmp_path, pairs="en-de,de-en", spm_model=model)
    for entry in outcome.results["pairs"].values():
        assert 0 < entry["spbleu"] < 100 and "tok:flores200" in entry["spbleu_signature"]
    assert "spBLEU" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "spbleu" in outcome.results["averages"]["en-xx"]
    with pytest.raises(per_language_bleu.UsageError, match="never downloaded"):
        run(tmp_path, spm_model=tmp_path / "absent.model")


def test_progress_line_counts_rate_and_eta():
    now = [0.0]
    progress = Progress(total_pairs=4, total_sentences=100, stream=open(os.devnull, "w"), clock=lambda: now[0])
    progress.start_pair("en-de")
    now[0] = 10.0
    progress.advance(25)
    progress.finish_pair()
    line = progress.line()
    assert "1/4 pairs" in line and "25/100 sentences" in line and "2.50 sent/s" in line and "ETA 00:30" in line
    assert line.endswith("en-de") and "\r" not in line


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _two_pairs(stream) -> str:
    progress = Progress(total_pairs=2, total_sentences=10, stream=stream)
    progress.message("note: kept")
    for pair in ("en-de", "de-en"):
        progress.start_pair(pair)
        progress.advance(5)
        progress.finish_pair()
    progress.message("error: after")
    progress.close()
    return stream.getvalue()


def test_progress_in_a_log_is_one_line_per_pair():
    lines = _two_pairs(io.StringIO()).splitlines()
    assert "\r" not in "".join(lines) and len(lines) == 4
    assert lines[0] == "note: kept" and lines[3] == "error: after"
    assert lines[1].startswith("1/2 pairs") and "5/10 sentences" in lines[1] and lines[1].endswith("en-de")
    assert lines[2].startswith("2/2 pairs") and "10/10 sentences" in lines[2] and lines[2].endswith("de-en")


def test_progress_on_a_terminal_is_redrawn_and_messages_keep_their_lines():
    text = _two_pairs(_Terminal())
    assert "\r2/2 pairs 100%" in text and text.endswith("\n")
    # A message clears the bar first, so it starts at the left edge and has its own line.
    assert "\rnote: kept\n" in text and "\rerror: after\n" in text


def test_the_script_imports_neither_tensorflow_nor_seqio(tmp_path):
    code = (
        "import sys, runpy\n"
        "sys.argv = ['per_language_bleu.py', '--checkpoint', sys.argv[1], '--output', sys.argv[2]]\n"
        "try:\n"
        "    runpy.run_path('eval/per_language_bleu.py', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 2, exit.code\n"
        "heavy = [m for m in ('tensorflow', 'seqio') if m in sys.modules]\n"
        "assert not heavy, heavy\n")
    completed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none"), str(tmp_path / "out")],
                               cwd=REPO, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.strip().startswith("error: --checkpoint")


def test_real_tiny_checkpoint_two_pairs(tiny_checkpoint, tmp_path, capsys):
    """The real Translator on the trainer's tiny checkpoint (trained on en<->de, fr, pt-BR, zh-Hans).

    Short sentences and greedy decoding keep every batch in one shape: one compilation."""
    checkpoint = tiny_checkpoint
    rows = [("en", "de", "Open the file.", "Datei öffnen."), ("de", "en", "Datei öffnen.", "Open the file."),
            ("en", "de", "Save the file.", "Datei speichern."), ("de", "en", "Datei speichern.", "Save the file."),
            ("en", "de", "Click OK to continue to the next page.", "Klicken Sie auf OK."),
            ("de", "en", "Klicken Sie auf OK, um fortzufahren.", "Click OK to continue.")]
    tsv = tmp_path / "test.tsv"
    tsv.write_text("src_lang\ttgt_lang\tsrc\ttgt\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    code = per_language_bleu.main(["--checkpoint", str(checkpoint), "--data", f"tsv:{tsv}", "--pairs", "en-de,de-en",
                                   "--max_sentences", "2", "--beam_size", "1", "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["pairs"]) == ["de-en", "en-de"]
    assert results["step"] == 6 and results["checkpoint"] == str(Path(checkpoint).resolve())
    for pair, entry in results["pairs"].items():
        assert entry["n"] == 2 and 0 <= entry["bleu"] <= 100
        assert len(report.read_lines(tmp_path / "out" / "hyps" / f"{pair}.txt")) == 2
    assert "| de | German |" in captured.out and "| group |" in captured.out
    assert (tmp_path / "out" / "per_language_bleu.png").is_file()


def test_decode_batch_reaches_the_translator(tmp_path):
    translator = FakeTranslator()
    run(tmp_path, translator, pairs="en-de", decode_batch=256)
    assert translator.decode_batch == 256  # Translator pads every decode call to 256 rows
    with pytest.raises(per_language_bleu.UsageError, match="--decode_batch"):
        run(tmp_path, pairs="en-de", decode_batch=0)


def test_baseline_with_another_tokenizer_is_refused_for_that_pair(tmp_path, full_run):
    baseline_dir = shutil.copytree(full_run[0].out_dir, tmp_path / "baseline")  # the module's run stays as it is
    path = baseline_dir / "results.json"
    baseline = json.loads(path.read_text(encoding="utf-8"))
    entry = baseline["pairs"]["en-th"]
    entry["bleu_signature"] = entry["bleu_signature"].replace("|tok:char|", "|tok:13a|")
    path.write_text(json.dumps(baseline), encoding="utf-8")
    stream = io.StringIO()
    outcome = run(tmp_path, baseline=path, stream=stream)
    (line,) = outcome.not_compared
    assert _one_line(line).startswith(
        "en-th: not compared with the baseline: BLEU signatures differ (tok char here, 13a in the baseline); rerun")
    assert f"error: {line}\n" in stream.getvalue()
    comparison = outcome.results["baseline"]
    assert "en-th" not in comparison["delta_bleu"] and "en-th" not in comparison["p_bleu"]
    assert len(comparison["delta_bleu"]) == len(comparison["p_chrf"]) == 7
    assert outcome.errors == [] and outcome.exit_code == 1  # scored, but the comparison asked for is incomplete
    markdown = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert f"Not compared with the baseline:\n\n- {line}\n" in markdown
    assert "| – | – | +0.0 (p 1.000) | +0.0 (p 1.000) |" in markdown  # th: en→X refused, X→en compared


def test_baseline_p_values_for_identical_and_clearly_better_outputs(tmp_path, full_run):
    from tests.test_scoring import sacrebleu_paired_bs_cli  # pylint: disable=import-outside-toplevel

    baseline = full_run[0].out_dir / "results.json"
    same = run(tmp_path, FakeTranslator(), baseline=baseline, output=tmp_path / "same")
    comparison = same.results["baseline"]
    assert comparison["p_bleu"] == comparison["p_chrf"] == dict.fromkeys(same.results["pairs"], 1.0)
    assert set(comparison["delta_bleu"].values()) == {0.0} and same.exit_code == 0
    assert "| +0.0 (p 1.000) | +0.0 (p 1.000) | +0.0 (p 1.000) | +0.0 (p 1.000) |" in (
        tmp_path / "same" / "results.md").read_text(encoding="utf-8")

    # Every sentence right instead of half of them three characters short.
    better = run(tmp_path, FakeTranslator(short_by=0), baseline=baseline, output=tmp_path / "better")
    written = json.loads((tmp_path / "better" / "results.json").read_text(encoding="utf-8"))["baseline"]
    assert written == better.results["baseline"] and better.exit_code == 0
    assert all(delta > 0 for delta in written["delta_chrf"].values())
    assert written["p_bleu"]["en-de"] < 0.01 and written["p_bleu"]["de-en"] < 0.01  # 8 sentences, +11 and +18 BLEU
    # The p-values sacreBLEU's command line gives on the two runs' files.
    hyps, refs = (report.read_lines(tmp_path / "better" / folder / "en-de.txt") for folder in ("hyps", "refs"))
    (tmp_path / "cli").mkdir()
    assert [written["p_bleu"]["en-de"], written["p_chrf"]["en-de"]] == pytest.approx(sacrebleu_paired_bs_cli(
        tmp_path / "cli", hyps, report.read_lines(full_run[0].out_dir / "hyps" / "en-de.txt"), refs, "13a"), abs=5e-5)
    p_text = f"(p {written['p_bleu']['en-de']:.3f})"
    assert p_text in next(line for line in (tmp_path / "better" / "results.md").read_text(encoding="utf-8").splitlines()
                          if line.startswith("| de |"))


def test_baseline_on_other_references_is_refused(tmp_path, full_run):
    outcome = run(tmp_path, pairs="en-de,en-fr", max_sentences=5, baseline=full_run[0].out_dir / "results.json")
    assert outcome.results["baseline"]["delta_bleu"] == {} and outcome.exit_code == 1
    assert [_one_line(line) for line in outcome.not_compared] == [
        f"{pair}: not compared with the baseline: the baseline's references differ (8 sentences there, 5 here); "
        "score both runs with the same --data, --split and --max_sentences" for pair in ("en-de", "en-fr")]


def test_tsv_codes_are_scored_as_the_model_spells_them_and_unknown_ones_counted(tmp_path, monkeypatch, capsys):
    """Rows for zh, ZH, zh_CN and pt go to the model's zh-Hans and pt-BR; the rows of `xq` are named once."""
    rows = [("en", "zh", "Open the file.", "打开文件。"), ("en", "xq", "Open the file.", "Qa."),
            ("en", "ZH", "Save the file.", "保存文件。"), ("en", "zh_CN", "Close the window.", "关闭窗口。"),
            ("en", "pt", "Save the file.", "Salve o arquivo."), ("xq", "en", "Qb.", "Open the file."),
            ("en", "de", "Open the file.", "Datei öffnen.")]
    tsv = tmp_path / "mixed.tsv"
    tsv.write_text("src_lang\ttgt_lang\tsrc\ttgt\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    translator = FakeTranslator(languages=("en", "de", "pt-BR", "zh-Hans"))
    monkeypatch.setattr(per_language_bleu, "load_translator", lambda checkpoint, step: translator)
    code = per_language_bleu.main(["--checkpoint", str(tmp_path), "--data", f"tsv:{tsv}",
                                   "--output", str(tmp_path / "out")])
    assert code == 1  # some rows were not scored
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert {pair: entry["n"] for pair, entry in results["pairs"].items()} == {
        "en-de": 1, "en-pt-BR": 1, "en-zh-Hans": 3}
    assert {call[1] for call in translator.calls} == {"de", "pt-BR", "zh-Hans"}
    # The three spellings of Chinese make one test set, in file order.
    assert report.read_lines(tmp_path / "out" / "refs" / "en-zh-Hans.txt") == ["打开文件。", "保存文件。", "关闭窗口。"]
    (error,) = results["errors"]
    assert _one_line(error).startswith(f"{tsv}: 2 rows not scored: unknown language code 'xq'; "
                                       "the closest supported code is")
    assert "1 not scored" in capsys.readouterr().err


def test_buckets_do_not_depend_on_the_test_data(tmp_path):
    sizes = EMBEDDED / "stats.json"  # de 56,064 training pairs
    embedded = run(tmp_path, pairs="en-de", resource_sizes=sizes, output=tmp_path / "embedded")
    tsv = run(tmp_path, pairs="en-de", resource_sizes=sizes, data=f"tsv:{FIXTURES / 'pairs.tsv'}",
              output=tmp_path / "tsv")
    assert embedded.results["languages"]["de"]["bucket"] == tsv.results["languages"]["de"]["bucket"] == "high"
    assert embedded.results["bucket_edges"] == tsv.results["bucket_edges"] == {"high_above": 30_000,
                                                                               "very_low_at_most": 10_000}


def test_default_edges_follow_the_corpus_size():
    assert buckets.default_edges({"de": 2_000_000, "fr": 50_000})[0] == buckets.NLLB_BUCKET_EDGES
    assert buckets.default_edges({"de": 1_000_000, "fr": 50_000})[0] == buckets.EMBEDDED_BUCKET_EDGES  # not over
    assert buckets.default_edges({})[0] == buckets.EMBEDDED_BUCKET_EDGES
