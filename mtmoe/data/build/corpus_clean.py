"""Cleaning sentence pairs and deciding their split.

Cleaning, applied to both sides of every pair (`clean_pair`):

    ("Fo~rm", "~Formular")                         -> ("Form", "Formular")
    ("_Save", "_Speichern")   (source libreoffice_ui) -> ("Save", "Speichern")
    ("Open", "開く(~O)")                            -> ("Open", "開く")
    ("Yes", "&Ja")                                 -> ("Yes", "Ja")
    ('Click <a data-l10n-name="x">here</a>', ...)  -> ("Click here", ...)   (not in help text:
                                                     there "<br>" is text about HTML)
    ("OK", "OK"), ("", "x"), ("123", "123")        -> dropped
    ("Export as PDF", "[text/shared/01/ref_pdf_export.xhp#ref_pdf_export not found].") -> dropped

The split is a function of the normalised English side only
(`split_of(english)`), so it is the same in every language and every source:
an English sentence in any language's dev or test set is never in any train set.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

# Split by hash bucket out of 10,000: 2% test, 2% dev, the rest train.
SPLIT_BUCKETS = 10_000
TEST_BUCKETS = 200
DEV_BUCKETS = 200

MAX_CHARS = 600          # longer "sentences" are code listings or whole tables
MAX_LENGTH_RATIO = 6.0   # character-length ratio beyond which a pair is misaligned

_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
# "(~F)", "(_F)", "(&F)" at the end of CJK labels: an accelerator in brackets.
_BRACKETED_ACCELERATOR = re.compile(r"\s*[(（]\s*[~_&]?[A-Za-z0-9]\s*[)）]")
# A help page whose embedded snippet failed to resolve: "[text/shared/01/x.xhp#id not found]."
_BROKEN_HELP_LINK = re.compile(r"\.xhp#|not found\]")
_AMPERSAND_ACCELERATOR = re.compile(r"&(?!(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);)(?=[^\W_])")
_UNDERSCORE_ACCELERATOR = re.compile(r"(?<![\w_])_(?=[^\W_])|(?<=[^\W\d_])_(?=[^\W\d_])")


def strip_accelerators(text: str, *, english: str, underscore: bool) -> str:
    """Removes accelerator marks: `~` always, `&` before a letter (not the `&`
    of an entity such as `&amp;`), bracketed "(~F)" forms the English lacks, and
    `_` before a letter when `underscore` (LibreOffice .ui strings use it)."""
    if not _BRACKETED_ACCELERATOR.search(english):
        text = _BRACKETED_ACCELERATOR.sub("", text)
    text = text.replace("~", "")
    text = _AMPERSAND_ACCELERATOR.sub("", text)
    if underscore and text.count("_") == 1:
        text = _UNDERSCORE_ACCELERATOR.sub("", text)
    return text


def _clean_side(text: str, *, english: str, source: str) -> str:
    # Help paragraphs come out of an HTML parser as plain text: a "<br>" there is
    # text about HTML, not markup. UI and Firefox strings still carry their markup.
    if source != "libreoffice_help":
        text = _TAG.sub("", text)
        text = strip_accelerators(text, english=english, underscore=source == "libreoffice_ui")
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def clean_pair(english: str, other: str, *, source: str) -> tuple[str, str] | None:
    """A cleaned (English, other) pair, or None when the pair is not usable."""
    english_clean = _clean_side(english, english=english, source=source)
    other_clean = _clean_side(other, english=english, source=source)
    if not english_clean or not other_clean:
        return None
    if english_clean.casefold() == other_clean.casefold():
        return None
    if any(_BROKEN_HELP_LINK.search(side) for side in (english_clean, other_clean)):
        return None
    if not any(ch.isalpha() for ch in english_clean) or not any(ch.isalpha() for ch in other_clean):
        return None
    if max(len(english_clean), len(other_clean)) > MAX_CHARS:
        return None
    short, long_ = sorted((len(english_clean), len(other_clean)))
    if long_ > 30 and long_ > MAX_LENGTH_RATIO * short:
        return None
    return english_clean, other_clean


def normalise_english(text: str) -> str:
    """The form the split hash is taken of: NFKC, case-folded, letters and
    digits only, single spaces. "Save  As..." and "save as" hash the same."""
    text = unicodedata.normalize("NFKC", text).casefold()
    words = re.findall(r"[^\W_]+", text)
    return " ".join(words) if words else text.strip()


def bucket_of(text: str) -> int:
    """Stable hash bucket in [0, SPLIT_BUCKETS) of an already normalised string."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % SPLIT_BUCKETS


def split_of(english: str) -> str:
    """"test", "dev" or "train" for an English sentence, the same in every
    language and source."""
    bucket = bucket_of(normalise_english(english))
    if bucket < TEST_BUCKETS:
        return "test"
    if bucket < TEST_BUCKETS + DEV_BUCKETS:
        return "dev"
    return "train"


def order_key(*texts: str) -> bytes:
    """A deterministic pseudo-random sort key (the subset chosen for the
    embedded train set and dev/test caps is a prefix in this order)."""
    return hashlib.sha256("\t".join(texts).encode("utf-8")).digest()
