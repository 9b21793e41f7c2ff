"""The languages mtmoe knows: codes, names, scripts and their codes in other corpora.

One row per language code the project can meet:

- every language of the embedded corpus (Debian's `libreoffice-l10n-*`,
  `libreoffice-help-*` and `firefox-esr-l10n-*` packages), with the corpus'
  codes: lowercase ISO 639-1 where one exists, else ISO 639-3 (`ast`), plus a
  region or script only where the corpus keeps varieties apart (`pt-BR`,
  `zh-Hans`, `sr-Latn`, `ca-valencia`);
- the 107 mC4 languages with the split names TFDS `c4/multilingual` uses,
  romanised variants (`ru-Latn`) and `und` (text no language was detected for)
  included, and its legacy codes (`iw` for Hebrew, `no`, `fil`);
- the 99 non-English OPUS-100 languages with OPUS-100's codes (`sh`, `li`, ...).

For each: English and native names (the web UI shows both), ISO 15924 script,
the FLORES-200 code (`deu_Latn`; a regional variety maps to the variety
FLORES-200 has, e.g. `pt-PT` -> `por_Latn`), the OPUS-100 code and the TFDS mC4
split name (None where the corpus lacks the language).

    >>> get_language("zh-Hans").flores
    'zho_Hans'
    >>> get_language("deu")
    ValueError: unknown language code 'deu'; nearest known codes: de, dsb, ...
"""

from __future__ import annotations

import dataclasses
import difflib


@dataclasses.dataclass(frozen=True)
class Language:
    """One language (or variety) and its codes elsewhere."""

    code: str  # the project's code: "de", "zh-Hans", "ru-Latn"
    name: str  # English name
    native_name: str  # the language's own name for itself
    script: str  # ISO 15924: "Latn", "Cyrl", "Hans", ...
    flores: str | None  # FLORES-200 file code "deu_Latn", or None
    opus100: str | None  # OPUS-100 code "de", or None
    mc4: str | None  # TFDS c4/multilingual split name "de", or None

    @property
    def task_code(self) -> str:
        """The code as it appears in task names: hyphens become `_` (`zh_Hans`)."""
        return task_code(self.code)


# code | English name | native name | script | FLORES-200 | OPUS-100 | mC4   ("-" = none)
_TABLE = """
af          | Afrikaans                | Afrikaans            | Latn | afr_Latn | af | af
am          | Amharic                  | አማርኛ                 | Ethi | amh_Ethi | am | am
an          | Aragonese                | aragonés             | Latn | -        | an | -
ar          | Arabic                   | العربية              | Arab | arb_Arab | ar | ar
as          | Assamese                 | অসমীয়া               | Beng | asm_Beng | as | -
ach         | Acholi                   | Acoli                | Latn | -        | -  | -
ast         | Asturian                 | asturianu            | Latn | ast_Latn | -  | -
az          | Azerbaijani              | azərbaycan           | Latn | azj_Latn | az | az
be          | Belarusian               | беларуская           | Cyrl | bel_Cyrl | be | be
bg          | Bulgarian                | български            | Cyrl | bul_Cyrl | bg | bg
bg-Latn     | Bulgarian (Latin script) | balgarski            | Latn | -        | -  | bg-Latn
bn          | Bangla                   | বাংলা                 | Beng | ben_Beng | bn | bn
br          | Breton                   | brezhoneg            | Latn | -        | br | -
bs          | Bosnian                  | bosanski             | Latn | bos_Latn | bs | -
ca          | Catalan                  | català               | Latn | cat_Latn | ca | ca
ca-valencia | Valencian                | valencià             | Latn | cat_Latn | -  | -
cak         | Kaqchikel                | Kaqchikel            | Latn | -        | -  | -
ceb         | Cebuano                  | Cebuano              | Latn | ceb_Latn | -  | ceb
co          | Corsican                 | corsu                | Latn | -        | -  | co
cs          | Czech                    | čeština              | Latn | ces_Latn | cs | cs
cy          | Welsh                    | Cymraeg              | Latn | cym_Latn | cy | cy
da          | Danish                   | dansk                | Latn | dan_Latn | da | da
de          | German                   | Deutsch              | Latn | deu_Latn | de | de
dsb         | Lower Sorbian            | dolnoserbšćina       | Latn | -        | -  | -
dz          | Dzongkha                 | རྫོང་ཁ                 | Tibt | dzo_Tibt | dz | -
el          | Greek                    | Ελληνικά             | Grek | ell_Grek | el | el
el-Latn     | Greek (Latin script)     | Ellinika             | Latn | -        | -  | el-Latn
en          | English                  | English              | Latn | eng_Latn | en | en
en-CA       | English (Canada)         | English (Canada)     | Latn | eng_Latn | -  | -
en-GB       | English (UK)             | English (UK)         | Latn | eng_Latn | -  | -
en-US       | English (US)             | English (US)         | Latn | eng_Latn | -  | -
en-ZA       | English (South Africa)   | English (South Africa) | Latn | eng_Latn | - | -
eo          | Esperanto                | Esperanto            | Latn | epo_Latn | eo | eo
es          | Spanish                  | español              | Latn | spa_Latn | es | es
es-AR       | Spanish (Argentina)      | español (Argentina)  | Latn | spa_Latn | -  | -
es-CL       | Spanish (Chile)          | español (Chile)      | Latn | spa_Latn | -  | -
es-ES       | Spanish (Spain)          | español (España)     | Latn | spa_Latn | -  | -
es-MX       | Spanish (Mexico)         | español (México)     | Latn | spa_Latn | -  | -
et          | Estonian                 | eesti                | Latn | est_Latn | et | et
eu          | Basque                   | euskara              | Latn | eus_Latn | eu | eu
fa          | Persian                  | فارسی                | Arab | pes_Arab | fa | fa
ff          | Fula                     | Pulaar               | Latn | -        | -  | -
fi          | Finnish                  | suomi                | Latn | fin_Latn | fi | fi
fil         | Filipino                 | Filipino             | Latn | tgl_Latn | -  | fil
fr          | French                   | français             | Latn | fra_Latn | fr | fr
fur         | Friulian                 | furlan               | Latn | fur_Latn | -  | -
fy          | Western Frisian          | Frysk                | Latn | -        | fy | fy
ga          | Irish                    | Gaeilge              | Latn | gle_Latn | ga | ga
gd          | Scottish Gaelic          | Gàidhlig             | Latn | gla_Latn | gd | gd
gl          | Galician                 | galego               | Latn | glg_Latn | gl | gl
gn          | Guarani                  | avañe'ẽ              | Latn | grn_Latn | -  | -
gu          | Gujarati                 | ગુજરાતી               | Gujr | guj_Gujr | gu | gu
gug         | Paraguayan Guarani       | avañe'ẽ              | Latn | grn_Latn | -  | -
ha          | Hausa                    | Hausa                | Latn | hau_Latn | ha | ha
haw         | Hawaiian                 | ʻŌlelo Hawaiʻi       | Latn | -        | -  | haw
he          | Hebrew                   | עברית                | Hebr | heb_Hebr | he | iw
hi          | Hindi                    | हिन्दी                 | Deva | hin_Deva | hi | hi
hi-Latn     | Hindi (Latin script)     | Hindi                | Latn | -        | -  | hi-Latn
hmn         | Hmong                    | Hmoob                | Latn | -        | -  | hmn
hr          | Croatian                 | hrvatski             | Latn | hrv_Latn | hr | -
hsb         | Upper Sorbian            | hornjoserbšćina      | Latn | -        | -  | -
ht          | Haitian Creole           | kreyòl ayisyen       | Latn | hat_Latn | -  | ht
hu          | Hungarian                | magyar               | Latn | hun_Latn | hu | hu
hy          | Armenian                 | հայերեն              | Armn | hye_Armn | hy | hy
ia          | Interlingua              | interlingua          | Latn | -        | -  | -
id          | Indonesian               | Indonesia            | Latn | ind_Latn | id | id
ig          | Igbo                     | Igbo                 | Latn | ibo_Latn | ig | ig
is          | Icelandic                | íslenska             | Latn | isl_Latn | is | is
it          | Italian                  | italiano             | Latn | ita_Latn | it | it
iw          | Hebrew (legacy code iw)  | עברית                | Hebr | heb_Hebr | he | iw
ja          | Japanese                 | 日本語               | Jpan | jpn_Jpan | ja | ja
ja-Latn     | Japanese (Latin script)  | Nihongo              | Latn | -        | -  | ja-Latn
jv          | Javanese                 | Jawa                 | Latn | jav_Latn | -  | jv
ka          | Georgian                 | ქართული              | Geor | kat_Geor | ka | ka
kab         | Kabyle                   | Taqbaylit            | Latn | kab_Latn | -  | -
kk          | Kazakh                   | қазақ тілі           | Cyrl | kaz_Cyrl | kk | kk
km          | Khmer                    | ខ្មែរ                 | Khmr | khm_Khmr | km | km
kmr         | Northern Kurdish         | Kurmancî             | Latn | kmr_Latn | ku | -
kn          | Kannada                  | ಕನ್ನಡ                 | Knda | kan_Knda | kn | kn
ko          | Korean                   | 한국어               | Kore | kor_Hang | ko | ko
ku          | Kurdish                  | Kurdî                | Latn | kmr_Latn | ku | ku
ky          | Kyrgyz                   | кыргызча             | Cyrl | kir_Cyrl | ky | ky
la          | Latin                    | Latina               | Latn | -        | -  | la
lb          | Luxembourgish            | Lëtzebuergesch       | Latn | ltz_Latn | -  | lb
li          | Limburgish               | Limburgs             | Latn | lim_Latn | li | -
lij         | Ligurian                 | ligure               | Latn | lij_Latn | -  | -
lo          | Lao                      | ລາວ                  | Laoo | lao_Laoo | -  | lo
lt          | Lithuanian               | lietuvių             | Latn | lit_Latn | lt | lt
lv          | Latvian                  | latviešu             | Latn | lvs_Latn | lv | lv
mg          | Malagasy                 | Malagasy             | Latn | plt_Latn | mg | mg
mi          | Māori                    | te reo Māori         | Latn | mri_Latn | -  | mi
mk          | Macedonian               | македонски           | Cyrl | mkd_Cyrl | mk | mk
ml          | Malayalam                | മലയാളം               | Mlym | mal_Mlym | ml | ml
mn          | Mongolian                | монгол               | Cyrl | khk_Cyrl | mn | mn
mr          | Marathi                  | मराठी                 | Deva | mar_Deva | mr | mr
ms          | Malay                    | Melayu               | Latn | zsm_Latn | ms | ms
mt          | Maltese                  | Malti                | Latn | mlt_Latn | mt | mt
my          | Burmese                  | မြန်မာ                | Mymr | mya_Mymr | my | my
nb          | Norwegian Bokmål         | norsk bokmål         | Latn | nob_Latn | nb | -
ne          | Nepali                   | नेपाली                 | Deva | npi_Deva | ne | ne
nl          | Dutch                    | Nederlands           | Latn | nld_Latn | nl | nl
nn          | Norwegian Nynorsk        | norsk nynorsk        | Latn | nno_Latn | nn | -
no          | Norwegian                | norsk                | Latn | nob_Latn | no | no
nr          | South Ndebele            | isiNdebele           | Latn | -        | -  | -
nso         | Northern Sotho           | Sesotho sa Leboa     | Latn | nso_Latn | -  | -
ny          | Nyanja                   | Chichewa             | Latn | nya_Latn | -  | ny
oc          | Occitan                  | occitan              | Latn | oci_Latn | oc | -
om          | Oromo                    | Oromoo               | Latn | gaz_Latn | -  | -
or          | Odia                     | ଓଡ଼ିଆ                 | Orya | ory_Orya | or | -
pa          | Punjabi                  | ਪੰਜਾਬੀ                | Guru | pan_Guru | pa | pa
pl          | Polish                   | polski               | Latn | pol_Latn | pl | pl
ps          | Pashto                   | پښتو                 | Arab | pbt_Arab | ps | ps
pt          | Portuguese               | português            | Latn | por_Latn | pt | pt
pt-BR       | Portuguese (Brazil)      | português (Brasil)   | Latn | por_Latn | pt | -
pt-PT       | Portuguese (Portugal)    | português (Portugal) | Latn | por_Latn | pt | -
rm          | Romansh                  | rumantsch            | Latn | -        | -  | -
ro          | Romanian                 | română               | Latn | ron_Latn | ro | ro
ru          | Russian                  | русский              | Cyrl | rus_Cyrl | ru | ru
ru-Latn     | Russian (Latin script)   | russkiy              | Latn | -        | -  | ru-Latn
rw          | Kinyarwanda              | Ikinyarwanda         | Latn | kin_Latn | rw | -
sat         | Santali                  | ᱥᱟᱱᱛᱟᱲᱤ               | Olck | sat_Olck | -  | -
sc          | Sardinian                | sardu                | Latn | srd_Latn | -  | -
sco         | Scots                    | Scots                | Latn | -        | -  | -
sd          | Sindhi                   | سنڌي                 | Arab | snd_Arab | -  | sd
se          | Northern Sami            | davvisámegiella      | Latn | -        | se | -
sh          | Serbo-Croatian           | srpskohrvatski       | Latn | -        | sh | -
si          | Sinhala                  | සිංහල                | Sinh | sin_Sinh | si | si
sk          | Slovak                   | slovenčina           | Latn | slk_Latn | sk | sk
skr         | Saraiki                  | سرائیکی              | Arab | -        | -  | -
sl          | Slovenian                | slovenščina          | Latn | slv_Latn | sl | sl
sm          | Samoan                   | Gagana Samoa         | Latn | smo_Latn | -  | sm
sn          | Shona                    | chiShona             | Latn | sna_Latn | -  | sn
so          | Somali                   | Soomaali             | Latn | som_Latn | -  | so
son         | Songhay                  | soŋay                | Latn | -        | -  | -
sq          | Albanian                 | shqip                | Latn | als_Latn | sq | sq
sr          | Serbian                  | српски               | Cyrl | srp_Cyrl | sr | sr
sr-Latn     | Serbian (Latin script)   | srpski               | Latn | -        | -  | -
ss          | Swati                    | siSwati              | Latn | ssw_Latn | -  | -
st          | Southern Sotho           | Sesotho              | Latn | sot_Latn | -  | st
su          | Sundanese                | Basa Sunda           | Latn | sun_Latn | -  | su
sv          | Swedish                  | svenska              | Latn | swe_Latn | sv | sv
sw          | Swahili                  | Kiswahili            | Latn | swh_Latn | -  | sw
szl         | Silesian                 | ślōnski              | Latn | szl_Latn | -  | -
ta          | Tamil                    | தமிழ்                | Taml | tam_Taml | ta | ta
te          | Telugu                   | తెలుగు                | Telu | tel_Telu | te | te
tg          | Tajik                    | тоҷикӣ               | Cyrl | tgk_Cyrl | tg | tg
th          | Thai                     | ไทย                  | Thai | tha_Thai | th | th
tk          | Turkmen                  | türkmençe            | Latn | tuk_Latn | tk | -
tl          | Tagalog                  | Tagalog              | Latn | tgl_Latn | -  | -
tn          | Tswana                   | Setswana             | Latn | tsn_Latn | -  | -
tr          | Turkish                  | Türkçe               | Latn | tur_Latn | tr | tr
trs         | Chicahuapa Triqui        | nánj nïˀïn           | Latn | -        | -  | -
ts          | Tsonga                   | Xitsonga             | Latn | tso_Latn | -  | -
tt          | Tatar                    | татар теле           | Cyrl | tat_Cyrl | tt | -
ug          | Uyghur                   | ئۇيغۇرچە             | Arab | uig_Arab | ug | -
uk          | Ukrainian                | українська           | Cyrl | ukr_Cyrl | uk | uk
und         | Unknown language         | (unknown)            | Zyyy | -        | -  | und
ur          | Urdu                     | اردو                 | Arab | urd_Arab | ur | ur
uz          | Uzbek                    | oʻzbekcha            | Latn | uzn_Latn | uz | uz
ve          | Venda                    | Tshivenḓa            | Latn | -        | -  | -
vi          | Vietnamese               | Tiếng Việt           | Latn | vie_Latn | vi | vi
wa          | Walloon                  | walon                | Latn | -        | wa | -
xh          | Xhosa                    | isiXhosa             | Latn | xho_Latn | xh | xh
yi          | Yiddish                  | ייִדיש                | Hebr | ydd_Hebr | yi | yi
yo          | Yoruba                   | Èdè Yorùbá           | Latn | yor_Latn | yo | yo
zh          | Chinese                  | 中文                 | Hans | zho_Hans | zh | zh
zh-Hans     | Chinese (Simplified)     | 简体中文             | Hans | zho_Hans | zh | -
zh-Hant     | Chinese (Traditional)    | 繁體中文             | Hant | zho_Hant | -  | -
zh-Latn     | Chinese (Latin script)   | Zhongwen             | Latn | -        | -  | zh-Latn
zu          | Zulu                     | isiZulu              | Latn | zul_Latn | zu | zu
"""


def _parse_table(table: str) -> dict[str, Language]:
    languages = {}
    for line in table.strip().splitlines():
        code, name, native, script, flores, opus, mc4 = (cell.strip() for cell in line.split("|"))
        none = lambda cell: None if cell == "-" else cell  # noqa: E731
        languages[code] = Language(
            code=code,
            name=name,
            native_name=native,
            script=script,
            flores=none(flores),
            opus100=none(opus),
            mc4=none(mc4),
        )
    return languages


LANGUAGES: dict[str, Language] = _parse_table(_TABLE)

# The split names of TFDS c4/multilingual, in TFDS' order: 101 languages plus 6
# romanised variants (mSwitch's "107 tasks"); `und` is TFDS' extra split for
# pages no language was detected for, kept out of the pre-training mixture as mT5 does.
MC4_LANGUAGES: tuple[str, ...] = tuple(
    sorted(
        {language.mc4 for language in LANGUAGES.values() if language.mc4 and language.mc4 != "und"},
        key=str.lower,
    )
)
MC4_UNKNOWN_LANGUAGE = "und"

# OPUS-100's 99 non-English languages, by their OPUS-100 codes.
OPUS100_LANGUAGES: tuple[str, ...] = tuple(
    sorted({language.opus100 for language in LANGUAGES.values() if language.opus100} - {"en"})
)

# Canonical spelling of each code ignoring case and "_" vs "-" (`pt_br` -> `pt-BR`).
_FOLDED = {code.lower().replace("_", "-"): code for code in LANGUAGES}
# For a TFDS mC4 split name or an OPUS-100 code, the row whose own code it is
# (`iw` -> `iw`, `sh` -> `sh`): every such code has a row of its own.
assert all(lang in LANGUAGES for lang in MC4_LANGUAGES + OPUS100_LANGUAGES)


def task_code(code: str) -> str:
    """A language code as task names spell it: `zh-Hans` -> `zh_Hans`."""
    return code.replace("-", "_")


def get_language(code: str) -> Language:
    """The row of `code` (case and `_`/`-` ignored: `pt_br` finds `pt-BR`).

    Raises:
      ValueError: the code is unknown; the message lists the nearest known codes.
    """
    if not isinstance(code, str):
        raise ValueError(f"a language code must be a string like 'de', got {code!r}")
    canonical = _FOLDED.get(code.strip().lower().replace("_", "-"))
    if canonical is None:
        raise ValueError(
            f"unknown language code {code!r}; nearest known codes: "
            f"{', '.join(nearest_codes(code))} (mtmoe/data/languages.py lists all)"
        )
    return LANGUAGES[canonical]


def find_language(code: str) -> Language | None:
    """The row of `code`, or None where the table lacks it (for callers that go on without)."""
    try:
        return get_language(code)
    except ValueError:
        return None


def nearest_codes(code: str, *, count: int = 5) -> list[str]:
    """The `count` known codes closest to `code` by spelling (difflib)."""
    folded = code.strip().lower().replace("_", "-")
    matches = difflib.get_close_matches(folded, list(_FOLDED), n=count, cutoff=0.0)
    # Codes that share the first letters rank first: `deu` should suggest `de`.
    prefix = [key for key in _FOLDED if folded.startswith(key) or key.startswith(folded)]
    ordered = list(dict.fromkeys(sorted(prefix, key=len, reverse=True)[:2] + matches))
    return [_FOLDED[key] for key in ordered[:count]]


def language_name(code: str, *, native: bool = False) -> str:
    """English name of `code` (`de` -> "German"); `native=True`: "Deutsch"."""
    language = get_language(code)
    return language.native_name if native else language.name


def flores_code(code: str) -> str:
    """FLORES-200 code of `code` (`de` -> "deu_Latn").

    Raises:
      ValueError: unknown code, or FLORES-200 has no such language.
    """
    language = get_language(code)
    if language.flores is None:
        raise ValueError(
            f"FLORES-200 has no {language.name} ({language.code}); "
            "evaluate it on the embedded test set instead"
        )
    return language.flores
