"""The languages mtmoe knows, and the one lookup from a code a user types to one of them.

Codes are BCP 47 tags and `langcodes` (with `language_data`, CLDR's data) does
the BCP 47 work: it folds case and `_`, maps ISO 639-3 and deprecated codes to
the preferred ones (`deu` -> `de`, `iw` -> `he`), fills in likely subtags
(`zh-CN` is `zh-Hans`, `pt` is `pt-BR`), measures how far apart two tags are,
and names each language in English and in itself.

What langcodes cannot know is which corpus calls a language what. The table
below has one row per code the project can meet, with its codes elsewhere:

- every language of the embedded corpus (Debian's `libreoffice-l10n-*`,
  `libreoffice-help-*` and `firefox-esr-l10n-*` packages), with the corpus'
  codes: lowercase ISO 639-1 where one exists, else ISO 639-3 (`ast`), plus a
  region or script only where the corpus keeps varieties apart (`pt-BR`,
  `zh-Hans`, `sr-Latn`, `ca-valencia`);
- the 107 mC4 languages with the split names TFDS `c4/multilingual` uses,
  romanised variants (`ru-Latn`) and `und` (text no language was detected for)
  included; its legacy split names (`iw` for Hebrew) are the mC4 column of the
  row of the current code;
- the 99 non-English OPUS-100 languages with OPUS-100's codes (`sh`, `li`, ...).

For each: the FLORES-200 code (`deu_Latn`; a regional variety maps to the
variety FLORES-200 has, e.g. `pt-PT` -> `por_Latn`), the OPUS-100 code and the
TFDS mC4 split name (None where the corpus lacks the language).

    >>> get_language("zh_CN").code, get_language("deu").flores
    ('zh', 'deu_Latn')
    >>> match_language("sv-SE", ["de", "en", "sv"]), match_language("pt", ["en", "pt-BR"])
    ('sv', 'pt-BR')
    >>> match_language("nn", ["de", "nb"])
    Traceback (most recent call last):
    ...
    ValueError: unsupported language code 'nn' (Norwegian Nynorsk); the closest supported code is 'nb' (Norwegian Bokmål)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable

import langcodes

# How far (langcodes.tag_distance) a supported code may be from the one asked
# for and still stand for it. 0: the same language once likely subtags are
# filled in (`zh-CN` = `zh-Hans`, `sv-SE` = `sv`, `deu` = `de`, `iw` = `he`);
# 1-5: another region's form of one language (`nb`/`no` 1, `en-GB` -> `en` 5,
# `pt-PT` -> `pt-BR` 5), which a reader takes for their own. From 8 on the
# tags are different languages (`bs` -> `hr` 8, `gsw` -> `de` 8, `arz` -> `ar`
# 10, `nn` -> `no` 20), which a translator must not swap in silently.
MATCH_DISTANCE = 5
# Below this distance two languages are related (`nn` / `nb` 20, `af` / `nl`
# 24; unrelated ones are 80 to 134): an error suggests such a neighbour before
# a code that is merely spelled alike.
_RELATED_DISTANCE = 79


@dataclasses.dataclass(frozen=True)
class Language:
    """One language (or variety) of the project and its codes in other corpora."""

    code: str  # the project's code: "de", "zh-Hans", "ru-Latn"
    flores: str | None  # FLORES-200 file code "deu_Latn", or None
    opus100: str | None  # OPUS-100 code "de", or None
    mc4: str | None  # TFDS c4/multilingual split name "de", or None

    @property
    def name(self) -> str:
        """English name, from CLDR: "German", "Chinese (Simplified)"."""
        return _english_name(self.code)

    @property
    def native_name(self) -> str:
        """The language's name for itself, from CLDR: "Deutsch", "中文（简体）"."""
        return _written_as(self.code).autonym()

    @property
    def script(self) -> str | None:
        """ISO 15924 script the language is written in by default: "Latn", "Hans"; None for `und`."""
        return script_of(self.code)

    @property
    def task_code(self) -> str:
        """The code as it appears in task names: hyphens become `_` (`zh_Hans`)."""
        return task_code(self.code)


# code | FLORES-200 | OPUS-100 | mC4   ("-" = none)
_TABLE = """
af          | afr_Latn | af | af
am          | amh_Ethi | am | am
an          | -        | an | -
ar          | arb_Arab | ar | ar
as          | asm_Beng | as | -
ach         | -        | -  | -
ast         | ast_Latn | -  | -
az          | azj_Latn | az | az
be          | bel_Cyrl | be | be
bg          | bul_Cyrl | bg | bg
bg-Latn     | -        | -  | bg-Latn
bn          | ben_Beng | bn | bn
br          | -        | br | -
bs          | bos_Latn | bs | -
ca          | cat_Latn | ca | ca
ca-valencia | cat_Latn | -  | -
cak         | -        | -  | -
ceb         | ceb_Latn | -  | ceb
co          | -        | -  | co
cs          | ces_Latn | cs | cs
cy          | cym_Latn | cy | cy
da          | dan_Latn | da | da
de          | deu_Latn | de | de
dsb         | -        | -  | -
dz          | dzo_Tibt | dz | -
el          | ell_Grek | el | el
el-Latn     | -        | -  | el-Latn
en          | eng_Latn | en | en
en-CA       | eng_Latn | -  | -
en-GB       | eng_Latn | -  | -
en-US       | eng_Latn | -  | -
en-ZA       | eng_Latn | -  | -
eo          | epo_Latn | eo | eo
es          | spa_Latn | es | es
es-AR       | spa_Latn | -  | -
es-CL       | spa_Latn | -  | -
es-ES       | spa_Latn | -  | -
es-MX       | spa_Latn | -  | -
et          | est_Latn | et | et
eu          | eus_Latn | eu | eu
fa          | pes_Arab | fa | fa
ff          | -        | -  | -
fi          | fin_Latn | fi | fi
fil         | tgl_Latn | -  | fil
fr          | fra_Latn | fr | fr
fur         | fur_Latn | -  | -
fy          | -        | fy | fy
ga          | gle_Latn | ga | ga
gd          | gla_Latn | gd | gd
gl          | glg_Latn | gl | gl
gn          | grn_Latn | -  | -
gu          | guj_Gujr | gu | gu
gug         | grn_Latn | -  | -
ha          | hau_Latn | ha | ha
haw         | -        | -  | haw
he          | heb_Hebr | he | iw
hi          | hin_Deva | hi | hi
hi-Latn     | -        | -  | hi-Latn
hmn         | -        | -  | hmn
hr          | hrv_Latn | hr | -
hsb         | -        | -  | -
ht          | hat_Latn | -  | ht
hu          | hun_Latn | hu | hu
hy          | hye_Armn | hy | hy
ia          | -        | -  | -
id          | ind_Latn | id | id
ig          | ibo_Latn | ig | ig
is          | isl_Latn | is | is
it          | ita_Latn | it | it
ja          | jpn_Jpan | ja | ja
ja-Latn     | -        | -  | ja-Latn
jv          | jav_Latn | -  | jv
ka          | kat_Geor | ka | ka
kab         | kab_Latn | -  | -
kk          | kaz_Cyrl | kk | kk
km          | khm_Khmr | km | km
kmr         | kmr_Latn | ku | -
kn          | kan_Knda | kn | kn
ko          | kor_Hang | ko | ko
ku          | kmr_Latn | ku | ku
ky          | kir_Cyrl | ky | ky
la          | -        | -  | la
lb          | ltz_Latn | -  | lb
li          | lim_Latn | li | -
lij         | lij_Latn | -  | -
lo          | lao_Laoo | -  | lo
lt          | lit_Latn | lt | lt
lv          | lvs_Latn | lv | lv
mg          | plt_Latn | mg | mg
mi          | mri_Latn | -  | mi
mk          | mkd_Cyrl | mk | mk
ml          | mal_Mlym | ml | ml
mn          | khk_Cyrl | mn | mn
mr          | mar_Deva | mr | mr
ms          | zsm_Latn | ms | ms
mt          | mlt_Latn | mt | mt
my          | mya_Mymr | my | my
nb          | nob_Latn | nb | -
ne          | npi_Deva | ne | ne
nl          | nld_Latn | nl | nl
nn          | nno_Latn | nn | -
no          | nob_Latn | no | no
nr          | -        | -  | -
nso         | nso_Latn | -  | -
ny          | nya_Latn | -  | ny
oc          | oci_Latn | oc | -
om          | gaz_Latn | -  | -
or          | ory_Orya | or | -
pa          | pan_Guru | pa | pa
pl          | pol_Latn | pl | pl
ps          | pbt_Arab | ps | ps
pt          | por_Latn | pt | pt
pt-BR       | por_Latn | pt | -
pt-PT       | por_Latn | pt | -
rm          | -        | -  | -
ro          | ron_Latn | ro | ro
ru          | rus_Cyrl | ru | ru
ru-Latn     | -        | -  | ru-Latn
rw          | kin_Latn | rw | -
sat         | sat_Olck | -  | -
sc          | srd_Latn | -  | -
sco         | -        | -  | -
sd          | snd_Arab | -  | sd
se          | -        | se | -
sh          | -        | sh | -
si          | sin_Sinh | si | si
sk          | slk_Latn | sk | sk
skr         | -        | -  | -
sl          | slv_Latn | sl | sl
sm          | smo_Latn | -  | sm
sn          | sna_Latn | -  | sn
so          | som_Latn | -  | so
son         | -        | -  | -
sq          | als_Latn | sq | sq
sr          | srp_Cyrl | sr | sr
sr-Latn     | -        | -  | -
ss          | ssw_Latn | -  | -
st          | sot_Latn | -  | st
su          | sun_Latn | -  | su
sv          | swe_Latn | sv | sv
sw          | swh_Latn | -  | sw
szl         | szl_Latn | -  | -
ta          | tam_Taml | ta | ta
te          | tel_Telu | te | te
tg          | tgk_Cyrl | tg | tg
th          | tha_Thai | th | th
tk          | tuk_Latn | tk | -
tl          | tgl_Latn | -  | -
tn          | tsn_Latn | -  | -
tr          | tur_Latn | tr | tr
trs         | -        | -  | -
ts          | tso_Latn | -  | -
tt          | tat_Cyrl | tt | -
ug          | uig_Arab | ug | -
uk          | ukr_Cyrl | uk | uk
und         | -        | -  | und
ur          | urd_Arab | ur | ur
uz          | uzn_Latn | uz | uz
ve          | -        | -  | -
vi          | vie_Latn | vi | vi
wa          | -        | wa | -
xh          | xho_Latn | xh | xh
yi          | ydd_Hebr | yi | yi
yo          | yor_Latn | yo | yo
zh          | zho_Hans | zh | zh
zh-Hans     | zho_Hans | zh | -
zh-Hant     | zho_Hant | -  | -
zh-Latn     | -        | -  | zh-Latn
zu          | zul_Latn | zu | zu
"""


def _parse_table(table: str) -> dict[str, Language]:
    languages = {}
    for line in table.strip().splitlines():
        code, flores, opus, mc4 = (cell.strip() for cell in line.split("|"))
        none = lambda cell: None if cell == "-" else cell  # noqa: E731
        languages[code] = Language(code=code, flores=none(flores), opus100=none(opus), mc4=none(mc4))
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


def task_code(code: str) -> str:
    """A language code as task names spell it: `zh-Hans` -> `zh_Hans`."""
    return code.replace("-", "_")


def _fold(code: str) -> str:
    return code.strip().lower().replace("_", "-")


@functools.lru_cache(maxsize=4096)
def _tag(code: str) -> langcodes.Language | None:
    """langcodes' normalised tag for `code` (`ZH_cn` -> zh-CN, `deu` -> de), None when it is no valid code."""
    try:
        tag = langcodes.Language.get(code.strip())
    except (langcodes.LanguageTagError, ValueError):
        return None
    return tag if tag.is_valid() else None


@functools.lru_cache(maxsize=4096)
def _written_as(code: str) -> langcodes.Language:
    # Names come from the code as written: normalising would call OPUS-100's `sh`
    # "Serbian (Latin)" and the corpus' `tl` "Filipino".
    return langcodes.Language.get(code.strip(), normalize=False)


def _english_name(code: str) -> str:
    try:
        return _written_as(code).display_name()
    except langcodes.LanguageTagError:  # a model may name a language by a code of its own
        return code


def normalize_code(code: str) -> str:
    """The standard BCP 47 spelling of a code: `ZH_cn` -> `zh-CN`, `deu` -> `de`, `iw` -> `he`.

    Raises:
      ValueError: `code` is no language code (one line).
    """
    tag = _tag(_check_string(code))
    if tag is None:
        raise ValueError(f"{code!r} is not a language code; write a BCP 47 tag such as 'de', 'pt-BR' or 'zh-Hans'")
    return tag.to_tag()


@functools.lru_cache(maxsize=4096)
def script_of(code: str) -> str | None:
    """ISO 15924 script `code` is written in by default, from CLDR's likely subtags.

    `zh` and `zh-CN` -> "Hans", `zh-TW` -> "Hant", `ja` -> "Jpan", `sr-Latn` -> "Latn";
    None for `und` (text in no detected language has no one script) and for
    what is no language code.
    """
    tag = _tag(code)
    if tag is None or tag.language in (None, "und"):
        return None
    return tag.maximize().script


def _check_string(code: object) -> str:
    if not isinstance(code, str):
        raise ValueError(f"a language code must be a string like 'de', got {code!r}")
    return code


def match_language(code: str, supported: Iterable[str], *, what: str = "language code") -> str:
    """The code in `supported` (e.g. a model's languages) that a user's `code` stands for.

    Exact codes win, ignoring case and `_` vs `-` (`pt_br` -> `pt-BR`). Else
    langcodes normalises `code` and picks the nearest supported code written in
    the same script, at most MATCH_DISTANCE away: `zh`, `zh-CN` -> `zh-Hans`;
    `zh-TW` -> `zh-Hant`; `sv-SE` -> `sv`; `deu` -> `de`; `iw` -> `he`; `pt` ->
    `pt-BR` where there is no `pt`. Ties go to the first code in sorted order.

    what: names the code in the error ("target language" -> "unknown target language 'xx'; ...").

    Raises:
      ValueError: nothing supported is that close; one line naming the closest supported code.
    """
    matched, message = _match(_check_string(code), tuple(sorted(set(supported))), what)
    if matched is None:
        raise ValueError(message)
    return matched


@functools.lru_cache(maxsize=4096)
def _match(code: str, supported: tuple[str, ...], what: str) -> tuple[str | None, str]:
    """(the match, "") or (None, the one-line error); cached: the app and the harness ask again and again."""
    folded = {_fold(candidate): candidate for candidate in supported}
    if _fold(code) in folded:
        return folded[_fold(code)], ""
    tag, script = _tag(code), script_of(code)
    if script is not None:
        # Same script only: CLDR puts Serbian's Latin and Cyrillic 5 apart, but a
        # translation into the other script is not what was asked for.
        candidates = [candidate for candidate in supported if script_of(candidate) == script]
        match = langcodes.closest_supported_match(tag, candidates, max_distance=MATCH_DISTANCE)
        if match is not None:
            return match, ""
    if not supported:
        return None, f"unknown {what} {code!r}: there are no languages to choose from"
    closest = _closest(code, tag, supported)
    suggestion = f"the closest supported code is {closest!r} ({_english_name(closest)})"
    if tag is None:
        return None, f"unknown {what} {code!r}; {suggestion}"
    return None, f"unsupported {what} {code!r} ({tag.display_name()}); {suggestion}"


def _closest(code: str, tag: langcodes.Language | None, supported: tuple[str, ...]) -> str:
    """The supported code to suggest: a related language (`nn` -> `nb`), else the nearest spelling (`xq` -> `xh`)."""
    if tag is not None:
        tags = [candidate for candidate in supported if _tag(candidate) is not None]
        related = langcodes.closest_supported_match(tag, tags, max_distance=_RELATED_DISTANCE)
        if related is not None:
            return related
    folded = {_fold(candidate): candidate for candidate in supported}
    spelled = difflib.get_close_matches(_fold(code), list(folded), n=1, cutoff=0.0)
    return folded[spelled[0]] if spelled else supported[0]


def get_language(code: str) -> Language:
    """The row of `code`, found as `match_language` finds it (`PT_br` -> `pt-BR`, `deu` -> `de`, `zh-CN` -> `zh`).

    Raises:
      ValueError: no row matches; one line naming the closest code the table has.
    """
    code = _check_string(code)
    return LANGUAGES.get(code) or LANGUAGES[match_language(code, LANGUAGES)]


def find_language(code: str) -> Language | None:
    """The row of `code`, or None where no row matches (for callers that go on without)."""
    try:
        return get_language(code)
    except ValueError:
        return None


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
