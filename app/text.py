"""Sentence splitting and joining, so that paragraphs translate as one batch.

The model was trained on single segments (localisation strings and sentences),
so a paragraph is cut into sentences by sentencex (Wikimedia's segmenter:
every script's sentence-final punctuation, and per language its abbreviations,
so that "Dr. Smith" and "Nr. 5" stay whole), every sentence of the input goes
to the translator in one batch, and the translations are put back in the
input's layout: the same lines, blank lines and leading indentation, the
sentences of a line joined as the target language's script joins them.

    >>> split_segments("Dr. Smith kam. Er ging.\\n\\n  Gut.", language="de")
    Layout(lines=[['Dr. Smith kam.', 'Er ging.'], [], ['Gut.']], indents=['', '', '  '])
"""

import dataclasses
import re

import sentencex

from mtmoe.data import languages

# Khmer's full stops, khan and bariyoosan, are not Sentence_Terminal in
# Unicode, so sentencex reads on past them: a sentence ends after each.
_KHMER_STOP = re.compile(r"(?<=[។៕])\s*(?=\S)")

# Scripts written without spaces between sentences (ISO 15924): Chinese and
# Japanese. Thai, Lao, Khmer and Burmese write no space between words but one
# between sentences.
_UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan"})


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


def _rules(language: str | None) -> str:
    """The sentencex rules for `language`: its language subtag (`pt-BR` -> `pt`); for no language or an
    unknown one ("unknown"), English's, which end sentences at every script's full stop."""
    if not language or languages.script_of(language) is None:
        return "en"
    return language.split("-")[0].lower()


def split_sentences(line: str, *, language: str | None = None) -> list[str]:
    """Cut one line into sentences, stripped; no text is lost or reordered.

    language: the line's language (a model code such as `de` or `zh-Hant`),
    whose abbreviations do not end a sentence; None when it is not known.

    >>> split_sentences("Er ging Nr. 5 entlang. Dann kam er.", language="de")
    ['Er ging Nr. 5 entlang.', 'Dann kam er.']
    >>> split_sentences("文件已保存。请关闭窗口。", language="zh-Hans")
    ['文件已保存。', '请关闭窗口。']
    """
    pieces = (piece.strip() for sentence in sentencex.segment(_rules(language), line)
              for piece in _KHMER_STOP.split(sentence))
    return [piece for piece in pieces if piece]


def split_segments(text: str, *, language: str | None = None) -> Layout:
    """Split text into lines (kept) and each line into sentences (see `split_sentences`)."""
    lines, indents = [], []
    for line in text.splitlines():
        stripped = line.lstrip()
        indents.append(line[: len(line) - len(stripped)])
        lines.append(split_sentences(stripped, language=language))
    return Layout(lines=lines, indents=indents)


def join_segments(layout: Layout, translations: list[str], *, target_lang: str) -> str:
    """Put translated sentences back in the input's layout.

    translations: one per sentence of `layout.sentences`, in the same order.
    target_lang: decides the separator between sentences on one line: none
    for Chinese and Japanese, a space for every other script.
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
