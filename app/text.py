"""Sentence splitting and joining, so that paragraphs translate as one batch.

The model was trained on single segments (localisation strings and sentences),
so a paragraph is cut into sentences, every sentence of the input goes to the
translator in one batch, and the translations are put back in the input's
layout: the same lines, blank lines and leading indentation.

    >>> split_segments("Open the file. Save it!\\n\\nClose it.")
    Layout(lines=[['Open the file.', 'Save it!'], [], ['Close it.']], indents=['', '', ''])
"""

import dataclasses
import re

from mtmoe.data import languages

# Full stops that end a sentence without a following space (CJK, Devanagari
# danda, Arabic and Urdu marks, Ethiopic, Armenian, Burmese) ...
_CLOSED_STOPS = "。！？｡؟۔।॥።։။"
# ... and the Latin-style ones that need whitespace and a next character that
# is not lower case ("e.g. this" and "3.5 GB" stay whole).
_OPEN_STOPS = ".!?…"
_CLOSERS = "\"'”’»)]）」』"
_SPLIT = re.compile(
    rf"(?<=[{re.escape(_CLOSED_STOPS)}])[{re.escape(_CLOSERS)}]*\s*"  # after a closed stop: any closers, optional space
    rf"|(?<=[{re.escape(_OPEN_STOPS)}])[{re.escape(_CLOSERS)}]*\s+(?=\S)"  # after an open stop: closers, then space
)
# A capital letter then a full stop ("J. Smith", "U.S.") is an initial, not an end.
_INITIAL = re.compile(r"(?:^|\s)\w\.$")

# Scripts written without spaces between sentences (ISO 15924): Chinese, Japanese,
# Thai, Lao, Khmer, Burmese and Tibetan (Dzongkha too).
_UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Thai", "Laoo", "Khmr", "Mymr", "Tibt"})


@dataclasses.dataclass
class Layout:
    """Where each sentence of the input stood.

    lines: per input line, its sentences (an empty list for a blank line).
    indents: per input line, the whitespace it began with.
    """

    lines: list[list[str]]
    indents: list[str]

    @property
    def sentences(self) -> list[str]:
        """All sentences in reading order: the batch to translate."""
        return [sentence for line in self.lines for sentence in line]


def split_sentences(line: str) -> list[str]:
    """Cut one line into sentences; no text is lost or reordered.

    >>> split_sentences("Save the file. Then close it?  Yes.")
    ['Save the file.', 'Then close it?', 'Yes.']
    >>> split_sentences("文件已保存。请关闭窗口。")
    ['文件已保存。', '请关闭窗口。']
    """
    pieces = []
    start = 0
    for match in _SPLIT.finditer(line):
        end = match.end()
        candidate = line[start:end].strip()
        rest = line[end:]
        boundary_text = line[start : match.start()]
        if not candidate or not rest.strip():
            continue
        if rest[0].islower() or _INITIAL.search(boundary_text):
            continue  # "e.g. the file", "J. Smith": not a sentence end
        pieces.append(candidate)
        start = end
    tail = line[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def split_segments(text: str) -> Layout:
    """Split text into lines (kept) and each line into sentences."""
    lines, indents = [], []
    for line in text.splitlines():
        stripped = line.lstrip()
        indents.append(line[: len(line) - len(stripped)])
        lines.append(split_sentences(stripped))
    return Layout(lines=lines, indents=indents)


def join_segments(layout: Layout, translations: list[str], *, target_lang: str) -> str:
    """Put translated sentences back in the input's layout.

    translations: one per sentence of `layout.sentences`, in the same order.
    target_lang: decides the separator between sentences on one line ("" for
    a language whose script goes without spaces, `zh-Hans` or `th`; " " otherwise).
    """
    expected = len(layout.sentences)
    if len(translations) != expected:
        raise ValueError(f"got {len(translations)} translations for {expected} sentences; the translator must return one per input")
    separator = "" if languages.script_of(target_lang) in _UNSPACED_SCRIPTS else " "
    iterator = iter(translations)
    out_lines = []
    for indent, sentences in zip(layout.indents, layout.lines):
        translated = [next(iterator).strip() for _ in sentences]
        out_lines.append(indent + separator.join(translated) if translated else "")
    return "\n".join(out_lines)
