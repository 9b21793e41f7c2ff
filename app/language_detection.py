"""Which of a model's source languages a text is written in.

The detector is py3langid, the maintained fork of langid.py (Lui & Baldwin
2012): a naive Bayes model over byte n-grams for 142 languages, shipped inside
the package (nothing is downloaded at run time), BSD-licensed, numpy its only
dependency. It answers 93 of the 114 languages of the embedded corpus and was
the most accurate of the offline detectors measured on their dev sets
(`benchmarks/language_detection.py`: langid 1.1.6, fastText's lid.176,
lingua, CLD3, heliport). Restricted with `set_languages` to the languages the
model reads, it never names one the model cannot translate from.

The model needs no source language (its tag names the target only), so a text
the detector is unsure about is translated all the same and its source is
reported as UNKNOWN. The detected code picks the sentence splitter's rules
(app/text.py) and is shown to the user.

    >>> detector = LanguageDetector(languages=["de", "en", "sr", "sr-Latn"], min_probability=0.8)
    >>> detector.detect("Die Datei konnte nicht gespeichert werden.")
    ('de', 0.99...)
    >>> detector.detect("12345")
    ('unknown', 0.0)
"""

from __future__ import annotations

import functools
import logging
import threading
import unicodedata
from collections.abc import Iterable, Sequence

import langcodes

from mtmoe.data import languages as language_lookup

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the source language reported when detection is unsure

# First word of the Unicode names of the letters of each script that tells
# variants of one language apart (`sr` / `sr-Latn`, `ru` / `ru-Latn`).
_SCRIPT_NAMES = {"Latn": "LATIN", "Cyrl": "CYRILLIC", "Arab": "ARABIC", "Deva": "DEVANAGARI", "Grek": "GREEK",
                 "Hebr": "HEBREW", "Hans": "CJK", "Hant": "CJK"}


def dominant_script(text: str) -> str | None:
    """First word of the Unicode name of the commonest letter script in `text` ('LATIN', 'CJK', ...)."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = unicodedata.name(char, "UNKNOWN").split()[0]
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else None


@functools.lru_cache(maxsize=4096)
def _base(code: str) -> str:
    """The language subtag: `pt-BR` -> `pt`, `zh-Hant` -> `zh`; a code of a model's own as it is."""
    try:
        return langcodes.Language.get(code).language or code
    except langcodes.LanguageTagError:
        return code


def _variants(code: str, languages: Sequence[str]) -> list[str]:
    """`code` and the other codes of its language in `languages`, plainest first."""
    return sorted((other for other in languages if _base(other) == _base(code)), key=lambda other: (len(other), other))


def model_language(detected: str, text: str, languages: Sequence[str]) -> str | None:
    """The code in `languages` for a detector's answer `detected` about `text`; None when none stands for it.

    The answer is matched as a user's code is (`no` -> `nb`, `iw` -> `he`,
    `zh` -> `zh-Hans`: mtmoe.data.languages.match_language). Where `languages`
    has several variants of that language, the text's script picks one:
    Traditional Chinese is what does not fit GB2312, the simplified character
    set (`zh-Hant`), and Latin letters pick `sr-Latn` over `sr`; variants in
    one script (`pt` / `pt-BR`) go to the matched, plainer code.
    """
    try:
        match = language_lookup.match_language(detected, languages)
    except ValueError:
        return None
    variants = _variants(match, languages)
    if len(variants) == 1:
        return match
    scripts = {code: language_lookup.script_of(code) for code in variants}
    script = dominant_script(text)
    if {"Hans", "Hant"} <= set(scripts.values()) and script == "CJK":
        try:
            text.encode("gb2312")
            wanted = "Hans"
        except UnicodeEncodeError:
            wanted = "Hant"
        return next(code for code in variants if scripts[code] == wanted)
    if script is None or _SCRIPT_NAMES.get(scripts[match]) == script:
        return match
    return next((code for code in variants if _SCRIPT_NAMES.get(scripts[code]) == script), match)


def answerable(labels: Iterable[str], languages: Sequence[str]) -> list[str]:
    """The codes in `languages` that `model_language` can give for a detector answering `labels`:
    each label's match, and the match's variants in another script."""
    codes = set()
    for label in labels:
        match = model_language(label, "", languages)
        if match is not None:
            codes.add(match)
            codes.update(code for code in _variants(match, languages)
                         if language_lookup.script_of(code) != language_lookup.script_of(match))
    return sorted(codes)


_model_lock = threading.Lock()


def _full_langid_model():
    """py3langid's shipped model, unpacked once per process (~1 s of CPU); a second caller waits for the first."""
    with _model_lock:
        return _unpack_langid_model()


@functools.cache
def _unpack_langid_model():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def start_unpacking_langid() -> threading.Thread | None:
    """Unpack py3langid's model in a background thread, so that the first detection finds it ready.

    The server calls this first thing: most of the unpacking is an xz
    decompression, which runs without the GIL beside the server's imports and
    model loading. Left to the first "auto" request, it would add about a
    second to that request. A failure is logged here and raised again where a
    detector is built; returns None if py3langid cannot be imported.
    """
    try:
        # Imported here rather than in the thread: numpy, which py3langid imports, must not
        # initialise in two threads at once (the server imports JAX meanwhile).
        import py3langid.langid  # noqa: F401
    except Exception:
        log.exception("py3langid cannot be imported; language detection will fail when asked")
        return None

    def unpack() -> None:
        try:
            _full_langid_model()
        except Exception:
            log.exception("unpacking py3langid's model failed; language detection will try again when asked")

    thread = threading.Thread(target=unpack, name="mtmoe-langid-unpack", daemon=True)
    thread.start()
    return thread


class LanguageDetector:
    """py3langid restricted to a model's source languages.

    Its answers map to the model's codes by `model_language`, which also picks
    among variants by script. `detectable` lists the codes it can answer.
    """

    def __init__(self, *, languages: Sequence[str], min_probability: float):
        from py3langid.langid import LanguageIdentifier

        full = _full_langid_model()  # shared read-only arrays; set_languages below slices copies
        self._identifier = LanguageIdentifier(full.nb_ptc, full.nb_pc, full.nb_classes, full.tk_nextmove,
                                              full.tk_output, norm_probs=True, tk_row=full.tk_row)
        self._languages = list(languages)
        labels = [label for label in full.labels if model_language(label, "", self._languages) is not None]
        self.detectable = answerable(labels, self._languages)
        if len(labels) >= 2:
            self._identifier.set_languages(labels)
        self._labels = labels
        self._min_probability = min_probability

    def detect(self, text: str) -> tuple[str, float]:
        """(the model's code, probability); (UNKNOWN, the best guess's probability) when unsure.

        Unsure: the probability is below `min_probability`, the text has no
        letters, or the model reads no language the detector knows.
        """
        if not self._labels or not any(char.isalpha() for char in text):
            return UNKNOWN, 0.0
        if len(self._labels) == 1:  # nothing to choose between but the label's variants
            label, probability = self._labels[0], 1.0
        else:
            label, probability = self._identifier.classify(text)
        if probability < self._min_probability:
            return UNKNOWN, float(probability)
        return model_language(label, text, self._languages), float(probability)
