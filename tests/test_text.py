"""Sentences by language (app/text.py) and the source language of a text (app/language_detection.py).

Expected segments are written by hand: where each language's sentences end,
which abbreviations do not end one, and how each script puts sentences back
together.
"""

import pytest

from app import text as text_lib
from app.language_detection import UNKNOWN, LanguageDetector, answerable, model_language
from app.service import AUTO, Limits, TranslationService
from tests.fixtures.app.fake_translator import FakeTranslator

# -- splitting ---------------------------------------------------------------


@pytest.mark.parametrize("language, line, sentences", [
    # German abbreviations ("Dr.", "Nr.") and a number before a full stop ("5 Uhr.").
    ("de", "Dr. Smith kam um 5 Uhr. Er ging Nr. 5 entlang.", ["Dr. Smith kam um 5 Uhr.", "Er ging Nr. 5 entlang."]),
    ("en", "Open the file. Save it! See J. Smith, e.g. here. 3.5 GB free. Mr. Brown left?",
     ["Open the file.", "Save it!", "See J. Smith, e.g. here.", "3.5 GB free.", "Mr. Brown left?"]),
    # Khmer's full stops (khan ។, bariyoosan ៕), which Unicode does not count as sentence ends.
    ("km", "ខ្ញុំទៅផ្សារ។ គាត់នៅផ្ទះ។ល្អ៕", ["ខ្ញុំទៅផ្សារ។", "គាត់នៅផ្ទះ។", "ល្អ៕"]),
    # Thai ends a sentence with a space, as it ends a clause: only punctuation cuts.
    ("th", "ไฟล์ถูกบันทึกแล้ว ปิดหน้าต่างได้เลย คุณจะไปไหม? ฉันจะไป",
     ["ไฟล์ถูกบันทึกแล้ว ปิดหน้าต่างได้เลย คุณจะไปไหม?", "ฉันจะไป"]),
    ("ja", "ファイルを保存しました。ウィンドウを閉じてください！本当ですか？",
     ["ファイルを保存しました。", "ウィンドウを閉じてください！", "本当ですか？"]),
    ("ar", "تم حفظ الملف. هل تريد إغلاق النافذة؟ نعم!", ["تم حفظ الملف.", "هل تريد إغلاق النافذة؟", "نعم!"]),
    ("sat", "ᱟᱢ ᱪᱮᱫ ᱢᱮ᱾ ᱤᱧ ᱵᱟᱝ ᱥᱮᱱᱚᱜᱼᱟ᱾", ["ᱟᱢ ᱪᱮᱫ ᱢᱮ᱾", "ᱤᱧ ᱵᱟᱝ ᱥᱮᱱᱚᱜᱼᱟ᱾"]),  # Ol Chiki mucaad
    ("zh-Hant", "檔案已儲存。請關閉視窗！", ["檔案已儲存。", "請關閉視窗！"]),
])
def test_each_language_splits_where_its_sentences_end(language, line, sentences):
    assert text_lib.split_sentences(line, language=language) == sentences
    assert "".join(sentences).replace(" ", "") == line.replace(" ", "")  # nothing lost or moved


def test_an_unknown_language_splits_at_every_scripts_full_stop():
    for language in (None, UNKNOWN):
        assert text_lib.split_sentences("Open it. 文件已保存。Gut! ខ្ញុំទៅ។ Done", language=language) == [
            "Open it.", "文件已保存。", "Gut!", "ខ្ញុំទៅ។", "Done"]


def test_layout_keeps_lines_blank_lines_and_indents():
    layout = text_lib.split_segments("Dr. Smith kam. Er ging.\n\n  Gut.\n", language="de")
    assert layout.lines == [["Dr. Smith kam.", "Er ging."], [], ["Gut."]]
    assert layout.indents == ["", "", "  "]
    assert layout.sentences == ["Dr. Smith kam.", "Er ging.", "Gut."]


# -- joining -----------------------------------------------------------------


def test_sentences_join_as_the_target_script_joins_them():
    layout = text_lib.split_segments("Open it. Close it.\n\n  Done.", language="en")
    # No space between Chinese or Japanese sentences; a space between Thai, Lao, Khmer, Burmese and all others.
    joined = {lang: text_lib.join_segments(layout, ["a", "b", "c"], target_lang=lang)
              for lang in ("zh-Hans", "zh-TW", "ja", "th", "lo", "km", "my", "ko", "de", "ar")}
    assert {lang: out.splitlines()[0] for lang, out in joined.items()} == {
        "zh-Hans": "ab", "zh-TW": "ab", "ja": "ab",
        "th": "a b", "lo": "a b", "km": "a b", "my": "a b", "ko": "a b", "de": "a b", "ar": "a b"}
    assert joined["de"] == "a b\n\n  c"
    with pytest.raises(ValueError, match="one per input"):
        text_lib.join_segments(layout, ["x"], target_lang="de")


# -- detection ---------------------------------------------------------------

# The embedded corpus' 114 languages and English: a model that reads them all.
CORPUS_LANGUAGES = (
    "ach af am an ar as ast az be bg bn br bs ca cak cs cy da de dsb dz el en eo es et eu fa ff fi fr fur fy ga gd "
    "gl gn gu he hi hr hsb hu hy ia id is it ja ka kab kk km kmr kn ko lij lt lv mk ml mn mr ms my nb ne nl nn nr "
    "nso oc om or pa pl pt-BR pt rm ro ru rw sat sc sco si sk skr sl son sq sr ss st sv szl ta te tg th tl tn tr trs "
    "ts ug uk ur uz ve vi xh zh-Hans zh-Hant zu").split()


@pytest.fixture(scope="module")
def detector():
    return LanguageDetector(languages=CORPUS_LANGUAGES, min_probability=0.8)


@pytest.mark.parametrize("language, text", [
    # Languages langid 1.1.6 could not answer at all.
    ("my", "ဖိုင်ကို သိမ်းဆည်းပြီးပါပြီ။"),
    ("gd", "Cha b' urrainn dhuinn am faidhle a shàbhaladh a chionn 's gu bheil an diosg làn."),
    ("fy", "It bestân koe net bewarre wurde, omdat de skiif fol is."),
    ("uz", "Faylni saqlab bo'lmadi, chunki disk to'lib qolgan."),
    ("kab", "Ur yezmir ara ad d-yettwasekles ufaylu acku adebṣi yeččur."),
    ("lij", "O file o no l'é stæto sarvou perché o disco o l'é pin."),
    ("om", "Faayilichi olkaa'amuu hin dandeenye sababni isaas diskiin guutameera."),
    # Variants of one language, told apart by script.
    ("zh-Hans", "无法打开这个文件，请检查权限。"),
    ("zh-Hant", "無法開啟這個檔案，請檢查權限。"),
    ("de", "Die Datei konnte nicht gespeichert werden."),
])
def test_clear_sentences_are_detected(detector, language, text):
    code, probability = detector.detect(text)
    assert code == language
    assert 0.8 <= probability <= 1


def test_the_detector_answers_only_the_models_languages():
    detector = LanguageDetector(languages=["en", "de", "sr", "sr-Latn", "pt-BR"], min_probability=0.0)
    assert detector.detectable == ["de", "en", "pt-BR", "sr", "sr-Latn"]
    assert detector.detect("Impossibile aprire il file richiesto.")[0] in detector.detectable  # Italian is not one
    assert detector.detect("Датотека није сачувана.")[0] == "sr"
    assert detector.detect("Datoteka nije sačuvana.")[0] == "sr-Latn"
    assert detector.detect("O arquivo não pôde ser aberto.")[0] == "pt-BR"


def test_detector_codes_map_to_the_models():
    languages = ["de", "nb", "pt", "pt-BR", "zh-Hans", "zh-Hant"]
    assert model_language("no", "Filen", languages) == "nb"
    assert model_language("deu", "Datei", languages) == "de"
    assert model_language("pt", "arquivo", languages) == "pt"  # one script: the plainer code
    assert model_language("zh", "檔案", languages) == "zh-Hant"
    assert model_language("it", "file", languages) is None
    assert answerable(["zh", "pt", "it"], languages) == ["pt", "zh-Hans", "zh-Hant"]


@pytest.mark.parametrize("text", ["12345 67", "ok", "!!!"])
def test_an_unsure_detection_translates_and_says_unknown(text):
    translator = FakeTranslator()
    service = TranslationService(translator, name="t", limits=Limits(min_detect_probability=0.8))
    source, probability = service.resolve_source(text, AUTO)
    assert source == UNKNOWN and 0 <= probability < 0.8
    result = service.translate_text(text, source_lang=AUTO, target_lang="de")
    assert (result.text, result.source_lang) == (f"[de] {text}", UNKNOWN)
    assert translator.calls[-1][:3] == ([text], "de", None)  # the model is not told a language
