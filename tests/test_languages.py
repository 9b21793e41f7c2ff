"""mtmoe/data/languages.py: every code the project meets is known, with consistent codes elsewhere."""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

from mtmoe.data import languages

# What each Debian localisation package of the embedded corpus' sources is called
# (`apt-cache pkgnames libreoffice-l10n- libreoffice-help- firefox-esr-l10n-`,
# Debian 12) -> the corpus code for its language. Metapackages (`-all`, `-in`,
# `-za`, `-common`) hold no language of their own.
DEBIAN_PACKAGE_CODES = {
    "ach": "ach",
    "af": "af",
    "am": "am",
    "an": "an",
    "ar": "ar",
    "as": "as",
    "ast": "ast",
    "az": "az",
    "be": "be",
    "bg": "bg",
    "bn": "bn",
    "br": "br",
    "bs": "bs",
    "ca": "ca",
    "ca-valencia": "ca-valencia",
    "cak": "cak",
    "cs": "cs",
    "cy": "cy",
    "da": "da",
    "de": "de",
    "dsb": "dsb",
    "dz": "dz",
    "el": "el",
    "en-ca": "en-CA",
    "en-gb": "en-GB",
    "en-us": "en-US",
    "en-za": "en-ZA",
    "eo": "eo",
    "es": "es",
    "es-ar": "es-AR",
    "es-cl": "es-CL",
    "es-es": "es-ES",
    "es-mx": "es-MX",
    "et": "et",
    "eu": "eu",
    "fa": "fa",
    "ff": "ff",
    "fi": "fi",
    "fr": "fr",
    "fur": "fur",
    "fy-nl": "fy",
    "ga": "ga",
    "ga-ie": "ga",
    "gd": "gd",
    "gl": "gl",
    "gn": "gn",
    "gu": "gu",
    "gu-in": "gu",
    "gug": "gug",
    "he": "he",
    "hi": "hi",
    "hi-in": "hi",
    "hr": "hr",
    "hsb": "hsb",
    "hu": "hu",
    "hy-am": "hy",
    "ia": "ia",
    "id": "id",
    "is": "is",
    "it": "it",
    "ja": "ja",
    "ka": "ka",
    "kab": "kab",
    "kk": "kk",
    "km": "km",
    "kmr": "kmr",
    "kn": "kn",
    "ko": "ko",
    "lij": "lij",
    "lt": "lt",
    "lv": "lv",
    "mk": "mk",
    "ml": "ml",
    "mn": "mn",
    "mr": "mr",
    "ms": "ms",
    "my": "my",
    "nb": "nb",
    "nb-no": "nb",
    "ne": "ne",
    "ne-np": "ne",
    "nl": "nl",
    "nn": "nn",
    "nn-no": "nn",
    "nr": "nr",
    "nso": "nso",
    "oc": "oc",
    "om": "om",
    "or": "or",
    "pa-in": "pa",
    "pl": "pl",
    "pt": "pt",
    "pt-br": "pt-BR",
    "pt-pt": "pt-PT",
    "rm": "rm",
    "ro": "ro",
    "ru": "ru",
    "rw": "rw",
    "sat": "sat",
    "sc": "sc",
    "sco": "sco",
    "si": "si",
    "sk": "sk",
    "skr": "skr",
    "sl": "sl",
    "son": "son",
    "sq": "sq",
    "sr": "sr",
    "sr-latn": "sr-Latn",
    "ss": "ss",
    "st": "st",
    "sv": "sv",
    "sv-se": "sv",
    "szl": "szl",
    "ta": "ta",
    "te": "te",
    "tg": "tg",
    "th": "th",
    "tl": "tl",
    "tn": "tn",
    "tr": "tr",
    "trs": "trs",
    "ts": "ts",
    "ug": "ug",
    "uk": "uk",
    "ur": "ur",
    "uz": "uz",
    "ve": "ve",
    "vi": "vi",
    "xh": "xh",
    "zh-cn": "zh-Hans",
    "zh-tw": "zh-Hant",
    "zu": "zu",
}

# OPUS-100 v1.0's 99 non-English languages (its README / supervised/ directory names).
OPUS100 = """af am an ar as az be bg bn br bs ca cs cy da de dz el eo es et eu fa fi fr fy ga gd
gl gu ha he hi hr hu hy id ig is it ja ka kk km kn ko ku ky li lt lv mg mk ml mn mr ms mt my nb
ne nl nn no oc or pa pl ps pt ro ru rw se sh si sk sl sq sr sv ta te tg th tk tr tt ug uk ur uz
vi wa xh yi yo zh zu""".split()


def tfds_mc4_languages() -> list[str]:
    """MC4_LANGUAGES from the installed TFDS c4 builder's source, without importing TensorFlow."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    source = (Path(spec.origin).parent / "text" / "c4.py").read_text()
    match = re.search(r"^MC4_LANGUAGES = (\[.*?\])", source, re.S | re.M)
    return ast.literal_eval(match.group(1))


def test_every_debian_package_language_is_known():
    for package_code, code in DEBIAN_PACKAGE_CODES.items():
        assert languages.get_language(code).code == code, package_code


def test_every_language_of_the_built_corpus_is_known():
    stats = Path(__file__).resolve().parents[1] / "data" / "embedded" / "stats.json"
    if not stats.exists():
        pytest.skip("data/embedded/stats.json not built yet")
    corpus_codes = json.loads(stats.read_text())["languages"]
    unknown = [code for code in corpus_codes if code not in languages.LANGUAGES]
    assert not unknown, f"add these corpus languages to mtmoe/data/languages.py: {unknown}"


def test_mc4_languages_are_tfds_splits():
    expected = tfds_mc4_languages()
    assert len(expected) == 107  # 101 languages + 6 romanised variants
    assert sorted(languages.MC4_LANGUAGES) == sorted(expected)
    assert languages.get_language("und").mc4 == "und"
    assert languages.get_language("ru-Latn").script == "Latn"


def test_opus100_languages():
    assert sorted(languages.OPUS100_LANGUAGES) == sorted(OPUS100)
    assert len(set(OPUS100)) == 99


def test_every_corpus_code_finds_the_row_that_lists_it():
    # mC4's legacy `iw` has no row of its own: the lookup takes it for `he`, whose split it is.
    for code in languages.MC4_LANGUAGES:
        assert languages.get_language(code).mc4 == code, code
    for code in languages.OPUS100_LANGUAGES:
        assert languages.get_language(code).opus100 == code, code
    assert languages.get_language("iw").code == "he"


def test_every_row_is_a_valid_tag_with_a_script():
    for code in languages.LANGUAGES:
        assert languages.normalize_code(code), code
        assert (languages.script_of(code) is None) == (code == "und"), code


def test_flores_codes_are_well_formed_and_match_script():
    hang_or_jpan = {"Kore": "Hang"}  # FLORES-200 writes Korean as Hangul only
    for language in languages.LANGUAGES.values():
        if language.flores is None:
            continue
        assert re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", language.flores), language
        assert language.flores.split("_")[1] == hang_or_jpan.get(language.script, language.script), language


def test_names_and_codes():
    german = languages.get_language("de")
    assert (german.name, german.native_name, german.flores, german.opus100, german.mc4) == (
        "German",
        "Deutsch",
        "deu_Latn",
        "de",
        "de",
    )
    assert languages.language_name("zh-Hant") == "Chinese (Traditional)"
    assert languages.language_name("de", native=True) == "Deutsch"
    assert languages.language_name("he", native=True) == "עברית"
    assert languages.language_name("iw") == "Hebrew"
    # Named as written, not as langcodes normalises them (`sh` -> sr-Latn, `tl` -> fil).
    assert (languages.language_name("sh"), languages.language_name("tl")) == ("Serbo-Croatian", "Tagalog")
    assert languages.get_language("he").mc4 == "iw"  # TFDS keeps the legacy code
    assert languages.get_language("PT_br").code == "pt-BR"  # case and "_" ignored
    assert languages.task_code("zh-Hans") == "zh_Hans"
    assert languages.flores_code("zh-Hans") == "zho_Hans"
    assert languages.flores_code("deu") == "deu_Latn"
    with pytest.raises(ValueError, match="FLORES-200 has no Breton"):
        languages.flores_code("br")


@pytest.mark.parametrize("code, normal", [
    ("ZH", "zh"), ("zh_CN", "zh-CN"), ("sv-se", "sv-SE"),
    ("deu", "de"),     # ISO 639-3 -> 639-1
    ("iw", "he"),      # deprecated -> current
    ("zho", "zh"),
])
def test_normalize_code(code, normal):
    assert languages.normalize_code(code) == normal


@pytest.mark.parametrize("code", ["xq", "pt-BX", "english", "", "de-"])
def test_normalize_code_refuses_what_is_no_code(code):
    with pytest.raises(ValueError, match="is not a language code"):
        languages.normalize_code(code)


@pytest.mark.parametrize("code, script", [
    ("zh", "Hans"), ("zh-CN", "Hans"), ("zh-TW", "Hant"), ("ja", "Jpan"), ("th", "Thai"), ("de", "Latn"),
    ("sr", "Cyrl"), ("sr-Latn", "Latn"), ("ko", "Kore"), ("und", None), ("xq", None),
])
def test_script_of(code, script):
    assert languages.script_of(code) == script


MODEL = ("de", "en", "he", "nb", "pt-BR", "sr", "sv", "zh-Hans", "zh-Hant")


@pytest.mark.parametrize("code, supported, expected", [
    ("zh", MODEL, "zh-Hans"), ("ZH", MODEL, "zh-Hans"), ("zh_CN", MODEL, "zh-Hans"),
    ("zh-CN", MODEL, "zh-Hans"),               # likely script of China: Hans, distance 0
    ("zh-TW", MODEL, "zh-Hant"), ("zh-HK", MODEL, "zh-Hant"),
    ("sv-SE", MODEL, "sv"), ("deu", MODEL, "de"), ("iw", MODEL, "he"),
    ("pt", MODEL, "pt-BR"),                    # CLDR's likely region for pt is BR
    ("pt-PT", MODEL, "pt-BR"),                 # another region's form, distance 5
    ("pt", ("en", "pt", "pt-BR"), "pt"),       # an exact code wins
    ("PT_br", ("pt", "pt-BR"), "pt-BR"),
    ("no", MODEL, "nb"),                       # Norwegian -> Bokmål, distance 1
    ("en-GB", MODEL, "en"),
    ("fil", ("en", "tl"), "tl"),               # the corpus' `tl` is Filipino to langcodes
])
def test_match_language(code, supported, expected):
    assert languages.match_language(code, supported) == expected


@pytest.mark.parametrize("code, supported", [
    ("en", ("de", "fr")),             # different languages: 84 apart
    ("zh-TW", ("en", "zh-Hans")),     # Traditional vs Simplified Chinese: 54 apart
    ("sr-Latn", ("en", "sr")),        # 5 apart in CLDR, but another script
    ("bs", ("en", "hr")),             # neighbouring languages: 8 apart
    ("nn", ("en", "nb")),             # 20 apart
])
def test_match_language_is_strict(code, supported):
    with pytest.raises(ValueError, match=f"unsupported language code '{code}'"):
        languages.match_language(code, supported)


def test_an_unknown_code_is_one_line_naming_the_closest_match():
    with pytest.raises(ValueError) as error:
        languages.match_language("nn", ("de", "en", "nb", "sv"))
    assert str(error.value) == ("unsupported language code 'nn' (Norwegian Nynorsk); "
                                "the closest supported code is 'nb' (Norwegian Bokmål)")
    with pytest.raises(ValueError) as error:
        languages.match_language("zh-TW", MODEL[:-1], what="target language")
    assert str(error.value) == ("unsupported target language 'zh-TW' (Chinese (Taiwan)); "
                                "the closest supported code is 'zh-Hans' (Chinese (Simplified))")
    with pytest.raises(ValueError) as error:
        languages.get_language("pt-BX")   # no region BX: the nearest spelling
    assert str(error.value) == "unknown language code 'pt-BX'; the closest supported code is 'pt-BR' (Portuguese (Brazil))"
    with pytest.raises(ValueError, match="must be a string"):
        languages.get_language(None)


def test_get_language_normalises_what_users_type():
    assert [languages.get_language(code).code for code in ("deu", "iw", "zh-CN", "ZH", "zh-TW", "sv-SE", "sh")] == [
        "de", "he", "zh", "zh", "zh-Hant", "sv", "sh"]
    assert languages.find_language("xq") is None
