"""Protected spans: what in a source segment must come out of translation exactly as it went in.

Software strings carry placeholders, markup, entities and escapes that the
program reading the translation depends on. `protect` finds them and puts a
numbered sentinel in place of each; `restore` puts them back into the
translation and says, in one line per problem, what did not come back:

    >>> p = protect('Delete <b>%s</b> from { $count } folders?')
    >>> p.text
    'Delete {1}{2}{3} from {4} folders?'
    >>> [(span.text, span.kind) for span in p.spans]
    [('<b>', 'tag'), ('%s', 'printf'), ('</b>', 'tag'), ('{ $count }', 'fluent')]
    >>> restore('{4} Ordner: {1}{2}{3} löschen?', p).text   # the target language may reorder spans
    '{ $count } Ordner: <b>%s</b> löschen?'
    >>> restore('{1}{2} löschen?', p).problems
    ('missing </b>', 'missing { $count }')

`check` says the same of any finished translation against its source's
spans. `translate_protected` is the Translator-level entry: it tries the
strategies of `DEFAULT_STRATEGY` in turn, each on the segments whose spans
have not all come back yet, and returns a segment that every strategy failed
flagged (`intact=False`, with the problems), never silently mangled:

1. "raw": the segment as it is. The model was trained on Firefox and
   LibreOffice strings that keep their `%S`, `{ $name }` and `%1` on both
   sides, so it often copies such spans; `check` decides whether it did.
2. "cut-around": the text between the spans is translated piece by piece and
   the spans are put back between the pieces, where the source has them.

What is recognised (`RULES`, tried in this order at each position; the first
that matches wins, so a longer form is listed before its prefix):

| kind            | examples                                                                 |
| --------------- | ------------------------------------------------------------------------ |
| `fluent`        | `{ $count }`, `{ -brand-name }`, `{ NUMBER($n) }`, `{ "}" }`, a whole select expression `{ $n -> [one] ... *[other] ... }` |
| `icu`           | `{count, plural, one {# item} other {# items}}`, `{0,number,integer}`    |
| `template`      | `{{ name }}` (Jinja, Handlebars, Angular)                               |
| `python-format` | `{}`, `{0}`, `{name}`, `{0:.2f}`, `{name!r}`, `{{`, `}}`                 |
| `variable`      | `${name}`, `$name$` (WebExtension messages)                              |
| `libreoffice`   | `$(ARG1)`, `%PRODUCTNAME`                                                |
| `printf`        | `%%`, `%s`, `%d`, `%S`, `%1$s`, `%1$S`, `%.2f`, `%-5lu`, `%'d`, `%(name)s` |
| `qt`            | `%1`, `%L2` (Qt, KDE and LibreOffice numbered arguments)                 |
| `strftime`      | `%H`, `%Y`, `%-d`, `%Ey` (date formats in gettext catalogs)              |
| `tag`           | `<b>`, `</b>`, `<a href="...">`, `<br/>`, `<html:span data-l10n-name="x">` |
| `entity`        | `&amp;`, `&#160;`, `&#x2026;`, `&brandShortName;`                         |
| `escape`        | `\\n`, `\\t`, `\\"`, `\\u00A0` as written in source files; line breaks and tabs themselves |
| `mozilla`       | `#1` .. `#9` (Mozilla's plural-form placeholders)                        |
| `glossary`      | the caller's terms (`glossary=`)                                         |

Text in braces that fits none of the brace grammars ("{not a placeholder}")
is plain text; so are a `%` before a space ("100% done") and `&` before a
letter without `;` (an accelerator).

Why a regex table and not the translate-toolkit (which the project uses to
read and write localisation files): its placeables
(`translate.storage.placeables.general`: printf, Python `%`, Qt `%1`,
`{...}`, XML tags and entities) were the starting point for the printf,
tag and entity rules here, but as a recogniser for this purpose it falls
short: its brace rule `{[^}]*}` cuts a Fluent select expression or an ICU
plural at the first inner `}`; it knows no Fluent terms and functions, no
`$(ARG1)`, `%PRODUCTNAME`, `#1` or `${name}`, no backslash escapes; its
printf rule takes the space flag, so "100% done" holds a placeholder `% d`;
and its parsers are tuned for highlighting in an editor (numbers, capitals,
punctuation, camel case and file paths are placeables there), not for
deciding what a program reads.

How the model sees the spans was decided by measurement on software strings
of products the corpus does not hold (`benchmarks/placeholders.py`;
BENCHMARKS.md, "Placeholders kept by translation"). Numbered sentinels in
five forms (`SENTINEL_STYLES`: `{1}`, `{ $v1 }`, `%1$S`, `%1`, `$(ARG1)`)
were measured too and are available as strategies: the shipped model was
never trained with them and loses or duplicates some in every language, and
no chain that starts with one reached the mean chrF++ of the default.
Training with sentinels kept in the corpus (its cleaner strips markup today)
and fine-tuning would be the way to let the model move spans itself.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

# ---------------------------------------------------------------------------
# Recognition


@dataclasses.dataclass(frozen=True)
class Span:
    """One protected span: its source text and what kind of thing it is.

    `target` is what `restore` puts back: None for the text itself; a
    glossary entry with a fixed translation sets it."""

    text: str
    kind: str
    target: str | None = None

    @property
    def output(self) -> str:
        return self.text if self.target is None else self.target


_FLUENT_IDENTIFIER = r"[A-Za-z][A-Za-z0-9_-]*"
# Inside one pair of braces (the braces themselves excluded).
_FLUENT_INLINE = re.compile(
    rf"""\s*(?:
        \${_FLUENT_IDENTIFIER}                                             # a variable: $count
      | -{_FLUENT_IDENTIFIER}(?:\.{_FLUENT_IDENTIFIER})?(?:\s*\(.*\))?   # a term: -brand-name, -term(case: "x")
      | [A-Z][A-Z0-9_-]*\s*\(.*\)                                           # a function: NUMBER($n)
      | "(?:[^"\\]|\\.)*"                                                  # a string literal
    )\s*""", re.VERBOSE | re.DOTALL)
_FLUENT_MESSAGE_REFERENCE = re.compile(rf"\s+{_FLUENT_IDENTIFIER}(?:\.{_FLUENT_IDENTIFIER})?\s+")  # { menu-save }
_FLUENT_SELECT = re.compile(r"[^{}]*->", re.DOTALL)  # the selector before the variants
_ICU_COMPLEX = re.compile(r"\s*\w+\s*,\s*(?:plural|select|selectordinal)\s*,", re.DOTALL)
_ICU_SIMPLE = re.compile(r"\s*\w+\s*,\s*(?:number|date|time|choice|spellout|ordinal|duration)\b[^{}]*")
# Python str.format and .NET composite format: index or name, attribute/index chain, conversion, spec.
_PYTHON_FIELD = re.compile(r"(?:\d+|[A-Za-z_]\w*)?(?:\.[A-Za-z_]\w*|\[[^\]{}]*\])*(?:![rsa])?"
                           r"(?:,\s*-?\d+)?(?::[^{}]*)?")
_TEMPLATE = re.compile(r"\{\{\s*[A-Za-z_$][\w.]*\s*\}\}")
_FLUENT_STRING = re.compile(r'\{\s*"(?:[^"\\]|\\.)*"\s*\}')  # { "}" }: a string literal may hold braces


def _brace_pairs(text: str) -> dict[int, int]:
    """{position of a "{": position of the "}" that closes it}, in one pass over `text`.

    >>> _brace_pairs("{a {b} c} }")
    {3: 5, 0: 8}
    """
    pairs, opened = {}, []
    for found in re.finditer(r"[{}]", text):
        if found.group() == "{":
            opened.append(found.start())
        elif opened:
            pairs[opened.pop()] = found.start()
    return pairs


def _match_braces(text: str, start: int, pairs: Mapping[int, int]) -> tuple[int, str] | None:
    """(end, kind) of the brace span opening at `start`, or None when the braces are prose."""
    if text.startswith("{{", start):
        template = _TEMPLATE.match(text, start)
        if template:
            return template.end(), "template"
        return start + 2, "python-format"  # an escaped brace
    literal = _FLUENT_STRING.match(text, start)
    if literal:
        return literal.end(), "fluent"
    if start not in pairs:
        return None
    position = pairs[start]
    end, inside = position + 1, text[start + 1:position]
    if "{" in inside:  # nested: only a Fluent select or an ICU plural/select nests
        if _ICU_COMPLEX.match(inside):
            return end, "icu"
        if _FLUENT_SELECT.match(inside) and "[" in inside:
            return end, "fluent"
        return None
    if _FLUENT_INLINE.fullmatch(inside) or _FLUENT_MESSAGE_REFERENCE.fullmatch(inside):
        return end, "fluent"
    if _ICU_SIMPLE.fullmatch(inside):
        return end, "icu"
    if _PYTHON_FIELD.fullmatch(inside):
        return end, "python-format"
    return None


Rule = Callable[[str, int, Mapping[int, int]], "tuple[int, str] | None"]  # (text, start, brace pairs) -> (end, kind)


def _regex_rule(pattern: str, kind: str, flags: int = 0) -> Rule:
    compiled = re.compile(pattern, flags)

    def rule(text: str, start: int, pairs: Mapping[int, int]) -> tuple[int, str] | None:
        found = compiled.match(text, start)
        return (found.end(), kind) if found and found.end() > start else None

    return rule


_PRINTF_TAIL = (r"[-+0#'I]*"                        # flags; not the space flag, or "100% done" would hold "% d"
                r"(?:\d+|\*(?:\d+\$)?)?"            # field width
                r"(?:\.(?:\d+|\*(?:\d+\$)?))?"      # precision
                r"(?:hh|h|ll|l|L|q|j|z|Z|t|I64|I32)?"  # length modifier
                r"[diouxXeEfFgGaAcCsSpn@]")         # conversion (%@: Objective-C objects)

# (first characters, rule) in the order they are tried at a position.
RULES: tuple[tuple[str, Rule], ...] = (
    ("{", _match_braces),
    ("}", _regex_rule(r"\}\}", "python-format")),
    ("$", _regex_rule(r"\$\([A-Za-z][A-Za-z0-9_]*\)", "libreoffice")),
    ("$", _regex_rule(r"\$\{[A-Za-z_][\w.]*\}|\$[A-Za-z_]\w*\$", "variable")),
    ("%", _regex_rule(r"%%", "printf")),
    ("%", _regex_rule(r"%\([^()\s]+\)" + _PRINTF_TAIL, "printf")),
    ("%", _regex_rule(r"%[A-Z][A-Z0-9_]*[A-Z][A-Z0-9_]*(?![\w])", "libreoffice")),  # two capitals at least
    ("%", _regex_rule(r"%(?:\d+\$)?" + _PRINTF_TAIL, "printf")),
    ("%", _regex_rule(r"%L?[1-9]\d?(?!\d)", "qt")),
    ("%", _regex_rule(r"%[-_0^#]?[EO]?[aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ+]", "strftime")),
    ("<", _regex_rule(r"""</?[A-Za-z][\w.:-]*(?:\s+[\w.:-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>=/]+))?)*\s*/?>""",
                      "tag")),
    ("&", _regex_rule(r"&(?:[A-Za-z][\w.-]*|#\d+|#[xX][0-9A-Fa-f]+);", "entity")),
    ("\\", _regex_rule(r"\\(?:u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|[nrtabfv0\"'\\])", "escape")),
    ("\n\r\t", _regex_rule(r"[\n\r\t]+", "escape")),
    ("#", _regex_rule(r"(?<![\w&])#[1-9](?![\w])", "mozilla")),
)
_STARTS = re.compile("[" + re.escape("".join({char for chars, _ in RULES for char in chars})) + "]")
_RULES_BY_CHAR: dict[str, list] = collections.defaultdict(list)
for _chars, _rule in RULES:
    for _char in _chars:
        _RULES_BY_CHAR[_char].append(_rule)


def find_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every recognised span of `text`, left to right, none overlapping.

    >>> find_spans("%1$S of %2$S")
    [(0, 4, 'printf'), (8, 12, 'printf')]
    """
    found, position = [], 0
    pairs = _brace_pairs(text) if "{" in text else {}
    while True:
        candidate = _STARTS.search(text, position)
        if candidate is None:
            return found
        start = candidate.start()
        for rule in _RULES_BY_CHAR[text[start]]:
            matched = rule(text, start, pairs)
            if matched is not None:
                end, kind = matched
                found.append((start, end, kind))
                position = end
                break
        else:
            position = start + 1


def _glossary_pattern(glossary: Mapping[str, str | None]) -> re.Pattern[str] | None:
    """One alternation of the terms, longest first, each whole where it begins or ends with a word character."""
    terms = sorted((term for term in glossary if term), key=len, reverse=True)
    if not terms:
        return None
    parts = [(r"(?<!\w)" if re.match(r"\w", term) else "") + re.escape(term) + (r"(?!\w)" if re.search(r"\w$", term)
                                                                                else "") for term in terms]
    return re.compile("|".join(parts))


# ---------------------------------------------------------------------------
# Sentinels


@dataclasses.dataclass(frozen=True)
class Sentinels:
    """How span number i (from 1) appears in the text the model reads.

    `template` holds `{i}`. `pattern` finds a sentinel in a translation, its
    number in group 1, tolerating what a model does to it without changing
    which span it names (inner spaces: "{ 2 }", case). `altered` finds what is
    left of a sentinel the model broke ("{2" without its brace), looked for
    after the whole sentinels are taken out."""

    name: str
    template: str
    pattern: str
    altered: str

    def format(self, number: int) -> str:
        return self.template.format(i=number)

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)

    @functools.cached_property
    def altered_regex(self) -> re.Pattern[str]:
        return re.compile(self.altered, re.IGNORECASE)


# The forms measured (benchmarks/placeholders.py); SENTINELS is protect()'s, which cut-around splits at.
SENTINEL_STYLES = {
    "brace": Sentinels("brace", "{{{i}}}", r"\{\s*(\d+)\s*\}", r"\{\s*\d+|\d+\s*\}"),
    "fluent": Sentinels("fluent", "{{ $v{i} }}", r"\{\s*\$\s*v\s*(\d+)\s*\}", r"\{\s*\$|\$\s*v\s*\d+"),
    "printf": Sentinels("printf", "%{i}$S", r"%\s*(\d+)\s*\$\s*S", r"%\s*\d+\s*\$|\d+\s*\$\s*S\b"),
    "qt": Sentinels("qt", "%{i}", r"%\s*(\d+)(?!\d)", r"%\s*(?=\D)"),
    "argument": Sentinels("argument", "$(ARG{i})", r"\$\s*\(\s*ARG\s*(\d+)\s*\)", r"\$\s*\(\s*ARG|ARG\s*\d+\s*\)"),
}
SENTINELS = SENTINEL_STYLES["brace"]
# What translate_protected tries, in turn, on the segments whose spans have not all come back: of the
# strategies that kept the spans of at least 99% of segments in every language of benchmarks/placeholders.py,
# the one with the highest mean chrF++ (BENCHMARKS.md, "Placeholders kept by translation").
DEFAULT_STRATEGY = ("raw", "cut-around")


@dataclasses.dataclass(frozen=True)
class Protected:
    """A segment with each span replaced by its sentinel; `spans[i - 1]` is sentinel i."""

    text: str
    spans: tuple[Span, ...]
    sentinels: Sentinels = dataclasses.field(default=SENTINELS, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Restored:
    """A translation with its spans put back; `intact` when every span came back exactly once.

    `problems`: one line each ("missing %1$S", "duplicated {0}", "altered sentinel '{2'"),
    empty when intact. `strategy`: how the model saw the spans (`STRATEGIES`: "sentinel:qt",
    "cut-around", "raw"), or "copied" when there was nothing to translate."""

    text: str
    intact: bool
    problems: tuple[str, ...] = ()
    strategy: str = ""


def protect(text: str, *, glossary: Mapping[str, str | None] | None = None,
            sentinels: Sentinels = SENTINELS) -> Protected:
    """`text` with every protected span replaced by a numbered sentinel, in order of appearance.

    glossary: {term: None} passes a term through untranslated, {term: translation}
    puts that translation in its place; terms match whole words, case-sensitively,
    longest first, and never inside another span. Text that already looks like a
    sentinel is protected too, so that a sentinel in the translation names one span.

        >>> protect("Open %s in GIMP", glossary={"GIMP": None}).text
        'Open {1} in {2}'
    """
    glossary = glossary or {}
    terms = _glossary_pattern(glossary)
    found: list[tuple[int, int, Span]] = []
    position = 0
    for start, end, kind in [*find_spans(text), (len(text), len(text), "")]:
        gap = text[position:start]
        lookalikes = [(m.start(), m.end(), Span(m.group(0), "literal")) for m in sentinels.regex.finditer(gap)]
        terms_found = [] if terms is None else [
            (m.start(), m.end(), Span(m.group(0), "glossary", glossary[m.group(0)])) for m in terms.finditer(gap)]
        for gap_start, gap_end, span in _non_overlapping(lookalikes + terms_found):
            found.append((position + gap_start, position + gap_end, span))
        if kind:
            found.append((start, end, Span(text[start:end], kind)))
        position = end
    pieces, position = [], 0
    for number, (start, end, _) in enumerate(found, start=1):
        pieces += [text[position:start], sentinels.format(number)]
        position = end
    pieces.append(text[position:])
    return Protected(text="".join(pieces), spans=tuple(span for _, _, span in found), sentinels=sentinels)


def _non_overlapping(matches: list[tuple[int, int, Span]]) -> list[tuple[int, int, Span]]:
    """Left to right; of overlapping matches the earlier (then the longer) wins."""
    kept, end = [], -1
    for start, stop, span in sorted(matches, key=lambda m: (m[0], -m[1])):
        if start >= end:
            kept.append((start, stop, span))
            end = stop
    return kept


def restore(translated: str, protected: Protected) -> Restored:
    """`translated` (a translation of `protected.text`) with each sentinel replaced by its span.

    Spans may come back in any order (languages reorder). Problems, one line
    each: a span whose sentinel is missing or appears more than once, a
    sentinel number no span has, what is left of a broken sentinel, and,
    checked on the restored text, any span recognised there that the source
    did not have (a restored `%1` that now reads `%12`)."""
    spans, sentinels = protected.spans, protected.sentinels
    counts = collections.Counter()
    problems = []

    def put_back(found: re.Match) -> str:
        number = int(found.group(1))
        if not 1 <= number <= len(spans):
            problems.append(f"unknown sentinel {found.group(0)!r}")
            return found.group(0)
        counts[number] += 1
        return spans[number - 1].output

    pieces, position = [], 0
    for found in sentinels.regex.finditer(translated):
        rest = translated[position:found.start()]
        problems += [f"altered sentinel {m.group(0)!r}" for m in sentinels.altered_regex.finditer(rest)]
        pieces += [rest, put_back(found)]
        position = found.end()
    rest = translated[position:]
    problems += [f"altered sentinel {m.group(0)!r}" for m in sentinels.altered_regex.finditer(rest)]
    pieces.append(rest)
    text = "".join(pieces)
    for number, span in enumerate(spans, start=1):
        if counts[number] == 0:
            problems.append(f"missing {span.output}")
        elif counts[number] > 1:
            problems.append(f"duplicated {span.output}")
    if not problems:
        problems = check(text, spans)
    return Restored(text=text, intact=not problems, problems=tuple(problems), strategy=f"sentinel:{sentinels.name}")


def check(text: str, spans: Sequence[Span]) -> list[str]:
    """Problems of a finished translation against the spans its source had: [] when each came out exactly.

    The spans recognised in `text` must be those of the source, as many times
    each, in any order, except that tags which nest in the source must nest
    in `text` too ("</b> ... <b>" is not kept); a glossary span must appear
    as its output."""
    expected = collections.Counter(span.output for span in spans if span.kind not in ("glossary", "literal"))
    found = find_spans(text)
    have = collections.Counter(text[start:end] for start, end, _ in found)
    problems = []
    for span_text in expected:
        if have[span_text] < expected[span_text]:
            problems.append(f"missing {span_text}")
        elif have[span_text] > expected[span_text]:
            problems.append(f"duplicated {span_text}")
    problems += [f"unexpected {span_text}" for span_text in have if span_text not in expected]
    terms = collections.Counter(span.output for span in spans if span.kind in ("glossary", "literal"))
    problems += [f"missing {term}" for term in terms if text.count(term) < terms[term]]
    if not problems and _nesting_problem([span.text for span in spans if span.kind == "tag"]) is None:
        problem = _nesting_problem([text[start:end] for start, end, kind in found if kind == "tag"])
        if problem:
            problems.append(f"tags out of order: {problem}")
    return problems


def _nesting_problem(tags: Sequence[str]) -> str | None:
    """None when `tags`, in order, open and close properly; else what goes wrong first.

    >>> _nesting_problem(["<b>", "<i>", "</i>", "<br/>", "</b>"]) is None
    True
    >>> _nesting_problem(["</b>", "<b>"])
    '</b> closes no open <b>'
    """
    open_tags = []
    for tag in tags:
        if tag.endswith("/>"):
            continue
        name = re.match(r"</?([\w.:-]+)", tag).group(1)
        if not tag.startswith("</"):
            open_tags.append((name, tag))
        elif open_tags and open_tags[-1][0] == name:
            open_tags.pop()
        else:
            return f"{tag} closes no open <{name}>"
    return f"{open_tags[-1][1]} is never closed" if open_tags else None


# ---------------------------------------------------------------------------
# Translation


class SupportsTranslate(Protocol):
    def translate(self, texts: Sequence[str], target_lang: str, *, beam_size: int = ...) -> list[str]: ...


STRATEGIES = ("raw", "cut-around", *(f"sentinel:{name}" for name in SENTINEL_STYLES))


def translate_protected(translator: SupportsTranslate, texts: Sequence[str], target_lang: str, *,
                        beam_size: int = 4, glossary: Mapping[str, str | None] | None = None,
                        strategy: str | Sequence[str] = DEFAULT_STRATEGY) -> list[Restored]:
    """Translate `texts` into `target_lang` keeping their protected spans; one Restored per text, in order.

    `strategy` is one of `STRATEGIES` or several, tried in turn: each
    translates the segments whose spans have not all come back yet.
    - "sentinel:<form>": the model reads each span as its numbered sentinel
      (`SENTINEL_STYLES`), and the spans are restored in whatever order the
      translation puts them. Line breaks and tabs at either end of a segment,
      and a pair of tags around all of it ("<p>...</p>"), are not shown to
      the model: they stay at the ends.
    - "cut-around": the text between spans is translated piece by piece and
      the spans put back between the pieces, in source order (the target
      language cannot move them, and each piece loses its context).
    - "raw": no protection, the text as it is (what the translator did before
      this module); the result says which spans did not come out.
    A segment that fails every strategy is returned flagged: the first
    strategy's text, intact=False, each strategy's problems. One with nothing
    to translate between its spans is copied (strategy "copied").

    `translator` needs only `.translate(texts, target_lang, beam_size=...)`;
    each strategy sends all its segments in one call.
    """
    if isinstance(texts, str):
        raise TypeError("translate_protected() takes a list of strings; wrap a single text in [ ]")
    chain = (strategy,) if isinstance(strategy, str) else tuple(strategy)
    unknown = [name for name in chain if name not in STRATEGIES]
    if unknown or not chain:
        raise ValueError(f"strategy={strategy!r}: choose one or more of {', '.join(STRATEGIES)}")
    results: list[Restored | None] = [None] * len(texts)
    tries: dict[int, list[Restored]] = collections.defaultdict(list)
    todo = []
    for index, text in enumerate(texts):
        protected = protect(text, glossary=glossary)
        if not _has_letters(protected.sentinels.regex.sub("", protected.text)):
            results[index] = Restored(text=_rejoin(protected), intact=True, strategy="copied")
        else:
            todo.append(index)
    for name in chain:
        if not todo:
            break
        step = _STEPS[name.split(":")[0]]
        sentinels = SENTINEL_STYLES[name.split(":")[1]] if name.startswith("sentinel:") else SENTINELS
        outputs = step(translator, [protect(texts[i], glossary=glossary, sentinels=sentinels) for i in todo],
                       target_lang, beam_size=beam_size)
        for index, result in zip(todo, outputs):
            tries[index].append(result)
            if result.intact:
                results[index] = result
        todo = [index for index in todo if results[index] is None]
    for index in todo:
        first = tries[index][0]
        problems = [f"{problem} ({result.strategy})" for result in tries[index] for problem in result.problems]
        results[index] = dataclasses.replace(first, problems=tuple(problems))
    return results


def _sentinel_step(translator: SupportsTranslate, protected: Sequence[Protected], target_lang: str, *,
                   beam_size: int) -> list[Restored]:
    """The model reads the sentinels; restore() puts the spans back wherever they came out."""
    edges = [_edges(item) for item in protected]
    outputs = translator.translate([core for _, core, _ in edges], target_lang, beam_size=beam_size)
    return [restore(prefix + output + suffix, item) for (prefix, _, suffix), output, item in
            zip(edges, outputs, protected)]


def _raw_step(translator: SupportsTranslate, protected: Sequence[Protected], target_lang: str, *,
              beam_size: int) -> list[Restored]:
    """The source as it is; the translation checked against the spans the source had."""
    outputs = translator.translate([_rejoin(item) for item in protected], target_lang, beam_size=beam_size)
    results = []
    for output, item in zip(outputs, protected):
        problems = check(output, item.spans)
        results.append(Restored(text=output, intact=not problems, problems=tuple(problems), strategy="raw"))
    return results


def _edges(protected: Protected) -> tuple[str, str, str]:
    """(prefix, core, suffix) of `protected.text`: the model reads only the core.

    The ends are whitespace and the sentinels of line breaks, tabs and
    escapes, and a pair of tags around the whole segment, opening and
    closing the same element."""
    regex, spans = protected.sentinels.regex, protected.spans
    tokens = [(m.start(), m.end(), spans[int(m.group(1)) - 1]) for m in regex.finditer(protected.text)
              if 1 <= int(m.group(1)) <= len(spans)]
    text, start, end = protected.text, 0, len(protected.text)

    def skip_space(position: int, step: int) -> int:
        while (start <= position < end if step > 0 else start < position <= end) and \
                text[position if step > 0 else position - 1].isspace():
            position += step
        return position

    first, last = 0, len(tokens) - 1
    while True:
        moved = False
        start = skip_space(start, 1)
        end = skip_space(end, -1)
        if first <= last and tokens[first][0] == start and tokens[first][2].kind == "escape":
            start, first, moved = tokens[first][1], first + 1, True
        if first <= last and tokens[last][1] == end and tokens[last][2].kind == "escape":
            end, last, moved = tokens[last][0], last - 1, True
        if first < last and tokens[first][0] == start and tokens[last][1] == end \
                and _encloses([token[2].text for token in tokens[first:last + 1]]):
            start, end, first, last, moved = tokens[first][1], tokens[last][0], first + 1, last - 1, True
        if not moved:
            break
    start, end = skip_space(start, 1), skip_space(end, -1)
    if start >= end:
        return "", text, ""  # nothing left in the middle: the model reads the whole
    return text[:start], text[start:end], text[end:]


def _encloses(tags: Sequence[str]) -> bool:
    """Whether the first of `tags` opens an element that the last closes, with the others inside it.

    ["<p>", "</p>"] yes; ["<p>", "</p>", "<p>", "</p>"] no: the first element closes halfway."""
    found = re.match(r"<([\w.:-]+)", tags[0])
    if not found or tags[0].endswith("/>") or tags[-1] != f"</{found.group(1)}>":
        return False
    name, depth = found.group(1), 0
    for tag in tags[:-1]:
        if re.match(rf"<{re.escape(name)}(?![\w.:-])", tag) and not tag.endswith("/>"):
            depth += 1
        elif tag == f"</{name}>":
            depth -= 1
        if depth == 0:
            return False
    return depth == 1


def _has_letters(text: str) -> bool:
    return any(char.isalpha() for char in text)


def _rejoin(protected: Protected) -> str:
    """The source with its spans' outputs in place of the sentinels (glossary translations applied)."""
    return protected.sentinels.regex.sub(lambda m: protected.spans[int(m.group(1)) - 1].output, protected.text)


def _pieces(protected: Protected) -> list[str]:
    """The text between sentinels, with the sentinels at odd indices: [text, sentinel, text, ..., text]."""
    return protected.sentinels.regex.split(protected.text)  # split keeps group 1, the number, at odd indices


def _cut_around(translator: SupportsTranslate, protected: Sequence[Protected], target_lang: str, *,
                beam_size: int) -> list[Restored]:
    """Translate the text between spans piece by piece; spans stay where the source has them."""
    requests: list[str] = []
    layouts = []
    for item in protected:
        layout = []
        for position, piece in enumerate(_pieces(item)):
            if position % 2:
                layout.append(item.spans[int(piece) - 1].output)
                continue
            # Only the words go to the model; the spaces around them stay as the source has them.
            core = piece.strip()
            if _has_letters(core):
                lead, trail = piece[:len(piece) - len(piece.lstrip())], piece[len(piece.rstrip()):]
                layout.append((lead, len(requests), trail))
                requests.append(core)
            else:
                layout.append(piece)
        layouts.append(layout)
    outputs = translator.translate(requests, target_lang, beam_size=beam_size) if requests else []
    results = []
    for item, layout in zip(protected, layouts):
        text = "".join(part if isinstance(part, str) else part[0] + outputs[part[1]] + part[2] for part in layout)
        problems = check(text, item.spans)
        results.append(Restored(text=text, intact=not problems, problems=tuple(problems), strategy="cut-around"))
    return results


_STEPS = {"sentinel": _sentinel_step, "cut-around": _cut_around, "raw": _raw_step}
