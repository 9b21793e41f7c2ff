"""Language codes for the evaluation harness: checks, names, FLORES-200 codes.

The table lives in `tasks/languages.py` (standard library only); importing it
must not pull in seqio or TensorFlow, which the harness never needs. When the
table cannot be imported (a trimmed install), codes are checked by their shape
only and named by their code.
"""

from __future__ import annotations

import functools
import re

# `de`, `ast`, `pt-BR`, `zh-Hans`, `sr-Latn`: ISO 639 plus an optional script or region.
_CODE_SHAPE = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$")


@functools.cache
def _table():
    try:
        from tasks import languages  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return languages


def check_language(code: str) -> None:
    """Raises ValueError (one line, with the nearest known codes) for an unknown `code`."""
    table = _table()
    if table is not None:
        table.get_language(code)
    elif not _CODE_SHAPE.match(code):
        raise ValueError(f"unknown language code {code!r}: use ISO 639-1 (de), ISO 639-3 (ast) or with a "
                         "script/region (zh-Hans, pt-BR)")


def language_name(code: str) -> str:
    """English name of `code` (`"de"` -> `"German"`), or the code itself when unknown."""
    table = _table()
    if table is None:
        return code
    try:
        return table.language_name(code)
    except ValueError:
        return code


def _corpus_code(code: str, field: str) -> str | None:
    table = _table()
    if table is None:
        return None
    try:
        return getattr(table.get_language(code), field, None)
    except ValueError:
        return None


def flores200_code(code: str) -> str | None:
    """The FLORES-200 file code of `code` (`"de"` -> `"deu_Latn"`), None where FLORES lacks it."""
    return _corpus_code(code, "flores")


def opus100_code(code: str) -> str | None:
    """The OPUS-100 code of `code` (`"zh-Hans"` -> `"zh"`), None where OPUS-100 lacks it."""
    return _corpus_code(code, "opus100")
