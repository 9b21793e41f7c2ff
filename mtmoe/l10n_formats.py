"""Localisation file formats: read a file, list what the model translates, write the translations back.

Used by `mtmoe.localize`. Every format is read and written by a library, never by a
parser of our own: the translate-toolkit (gettext `.po`/`.pot` with `pypo`, XLIFF 1.2
with `xliff`, XLIFF 2.0 with `xliff2`, Java/Mozilla `.properties` with `properties`,
plain text with `txt`) and, for Fluent `.ftl`, fluent.syntax, the parser the
translate-toolkit's own FluentFile is built on. FluentFile is not used because it
writes a file back by serialising the whole resource again: the blank lines between
messages and the layout of every message nobody changed are lost. fluent.syntax gives
each entry's span, so only the messages that were translated are rewritten.

The translate-toolkit is GPL-3.0-or-later (this project's code is Apache-2.0, which
GPL-3.0 code may use; a distribution that bundles both is under GPL-3.0).

A document is read once per target language (`read(data, name)`) and then:

    entries = document.entries("de", retranslate=False, previous=None)
    for entry in entries:        # entry.segments: what the model translates
        problems = entry.write(results)   # one Restored per segment; () when all is well
    data = document.serialize()

An entry whose `write` is None keeps what it has (already translated). Every
machine translation is marked for review the format's way (fuzzy, an XLIFF state,
a comment); an entry whose placeholders or markup did not all come back gets a
comment naming what is wrong. `Restored` is mtmoe.protected_spans.Restored
(text, intact, problems).
"""

from __future__ import annotations

import dataclasses
import gettext
import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import langcodes
from lxml import etree

from mtmoe.data import languages as language_lookup

MT_NOTE = "mtmoe machine translation: review before use"
NOTE_PREFIX = "mtmoe"  # every comment this module writes starts with it, so a rerun can find and replace them
# Mozilla's keyboard-shortcut keys (`.accesskey`, `menu.commandkey = S`): a letter of the
# label or a key name, which only a person choosing it for the translated label can pick.
SHORTCUT_NAMES = ("accesskey", "commandkey", "key")


class FileError(ValueError):
    """A file that cannot be read as its format; the message says where and what to do, in one line."""


@dataclasses.dataclass
class Entry:
    """One translatable entry: its key, the segments the model translates, and how to write them back.

    write(results) takes one Restored per segment, writes the translation and its
    review marks, and returns the problems it flagged (empty: none). None: the
    entry keeps what it has (already translated).
    """

    key: str
    segments: list[str]
    write: Callable[[Sequence[Any]], tuple[str, ...]] | None = None


def problems_note(problems: Sequence[str]) -> str:
    """The comment on a flagged entry: 'mtmoe: not all placeholders and markup came back (missing %1$S): ...'."""
    return f"{NOTE_PREFIX}: not all placeholders and markup came back ({'; '.join(problems)}): fix before use"


def _problems(results: Sequence[Any]) -> tuple[str, ...]:
    return tuple(problem for result in results if not result.intact for problem in (result.problems or ("damaged",)))


def line_of(data: bytes | str, offset: int) -> int:
    """1-based line number of `offset` in `data`."""
    return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, offset) + 1


def decode(data: bytes, encoding: str, name: str, fix: str) -> str:
    """`data` decoded strictly; FileError naming the line and byte that do not fit, and `fix`."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise FileError(f"{name}: line {line_of(data, error.start)}: byte 0x{data[error.start]:02X} is not "
                        f"{encoding}; {fix}") from None
    except LookupError:
        raise FileError(f"{name} declares the unknown encoding {encoding!r}; declare UTF-8 and save it as "
                        f"UTF-8") from None


def _same_language(declared: str | None, target: str) -> bool:
    if not declared:
        return False
    try:
        return language_lookup.match_language(declared.replace("@", "-"), [target]) == target
    except ValueError:
        return False


def _serialize(store) -> bytes:
    out = io.BytesIO()
    store.serialize(out)
    return out.getvalue()


# -- gettext .po / .pot ----------------------------------------------------------------------------


def gettext_plural_rule(code: str) -> tuple[int, str] | None:
    """(nplurals, plural expression) of language `code` from the translate-toolkit's table, None if it lacks it.

    Tried in turn: the code as gettext spells it (`pt_BR`), the language with its
    likely region (`zh-Hans` -> `zh_CN`), the bare language (`sr-Latn` -> `sr`).
    """
    from translate.lang import data

    tag = langcodes.Language.get(code)
    candidates = [code.replace("-", "_"), f"{tag.language}_{tag.maximize().territory}", tag.language]
    for candidate in candidates:
        if candidate in data.languages:
            _, nplurals, plural = data.languages[candidate]
            return int(nplurals), plural
    return None


ENGLISH_PLURAL_RULE = (2, "(n != 1)")


def _form_of_one(plural: str) -> int:
    """The plural form n = 1 takes under a gettext plural expression (0 where the expression cannot be read)."""
    try:
        return gettext.c2py(plural)(1)
    except (ValueError, SyntaxError, RecursionError):
        return 0


def _po_key(unit) -> str:
    return f"{unit.getcontext()}\x04{unit.source}" if unit.getcontext() else str(unit.source)


def _po_forms(unit) -> list[str]:
    return list(unit.target.strings) if unit.hasplural() else [unit.target]


class PoDocument:
    """A gettext catalog (`.po` or `.pot`), through translate-toolkit's pypo."""

    def __init__(self, data: bytes, name: str):
        from translate.storage import pypo
        from translate.storage.poparser import PoParseError

        self.name = name
        self.notes: list[str] = []
        try:
            self.store = pypo.pofile()
            self.store.parse(data)
        except PoParseError as error:  # "end-of-line within string on line 8: 'msgid \"Close\\n'"
            raise FileError(f"{name} is not a valid gettext catalog: {error}; fix that line "
                            f"(msgfmt -c {name} checks the whole file)") from None
        # pypo falls back to ISO-8859-1 where the declared charset does not fit: check it ourselves.
        decode(data, self.store.encoding or "utf-8", name,
               'declare the file\'s charset in its header ("Content-Type: text/plain; charset=...") '
               'or save it as UTF-8')
        seen = set()
        for unit in self.store.units:
            if unit.isheader() or unit.isobsolete():
                continue
            key = (unit.getcontext(), unit.source)
            if key in seen:
                context = f" (msgctxt {unit.getcontext()!r})" if unit.getcontext() else ""
                raise FileError(f"{name} defines msgid {str(unit.source)!r}{context} twice; remove one of them "
                                f"(msgfmt -c {name} shows both lines)")
            seen.add(key)

    def entries(self, target: str, *, retranslate: bool, previous: bytes | None = None) -> list[Entry]:
        same = _same_language(self.store.gettargetlanguage(), target)
        keep_existing = not retranslate and (same or not self.store.gettargetlanguage())
        earlier = PoDocument(previous, self.name).translated_units() if previous else {}
        nplurals, plural = self._plural_rule(target, same)
        self.store.updateheader(add=True, Language=target.replace("-", "_"))
        self.store.updateheaderplural(nplurals, plural)
        entries = []
        for unit in self.store.units:
            if unit.isheader() or unit.isobsolete() or not unit.source:
                continue
            key = _po_key(unit)
            if keep_existing and any(_po_forms(unit)):
                entries.append(Entry(key=key, segments=[]))
                continue
            if key in earlier:  # the same msgctxt and msgid in the earlier output: its translation stays
                unit.target, unit.othercomments = earlier[key].target, earlier[key].othercomments
                unit.markfuzzy(earlier[key].isfuzzy())
                entries.append(Entry(key=key, segments=[]))
                continue
            segments = [str(form) for form in unit.source.strings] if unit.hasplural() else [str(unit.source)]
            entries.append(Entry(key=key, segments=segments,
                                 write=lambda results, unit=unit: self._write(unit, results, nplurals, plural, target)))
        return entries

    def translated_units(self) -> dict[str, Any]:
        """{msgctxt + msgid: unit} of the entries that have a translation (of an earlier output)."""
        return {_po_key(unit): unit for unit in self.store.units
                if not unit.isheader() and not unit.isobsolete() and any(_po_forms(unit))}

    def _plural_rule(self, target: str, same: bool) -> tuple[int, str]:
        declared_n, declared_plural = self.store.getheaderplural()
        if same and declared_n and declared_plural:
            return int(declared_n), declared_plural
        rule = gettext_plural_rule(target)
        if rule is None:
            self.notes.append(f"no plural rule is known for {target}: wrote English's (nplurals=2; plural=(n != 1)); "
                              f"correct Plural-Forms in the header")
            return ENGLISH_PLURAL_RULE
        return rule

    @staticmethod
    def _write(unit, results, nplurals: int, plural: str, target: str) -> tuple[str, ...]:
        from translate.misc.multistring import multistring

        unit.othercomments = [line for line in unit.othercomments if not line.startswith(f"# {NOTE_PREFIX}")]
        if unit.hasplural():
            singular, plural_text = results[0].text, results[-1].text
            # The singular goes to the form n = 1 selects; every other form gets the plural translation.
            one = _form_of_one(plural) if nplurals > 1 else None
            unit.target = multistring([singular if form == one else plural_text for form in range(nplurals)])
            extra = [str(form) for form in range(nplurals) if form != one][1:]
            if extra:
                repeats = f"forms {', '.join(extra)} repeat" if len(extra) > 1 else f"form {extra[0]} repeats"
                unit.addnote(f"{NOTE_PREFIX}: {target} has {nplurals} plural forms; {repeats} the plural translation: "
                             f"adjust to the Plural-Forms rule", origin="translator")
        else:
            unit.target = results[0].text
        unit.markfuzzy(True)
        problems = _problems(results)
        if problems:
            unit.addnote(problems_note(problems), origin="translator")
        return problems

    def serialize(self) -> bytes:
        encoding = self.store.encoding
        data = _serialize(self.store)
        if self.store.encoding != encoding:  # pypo switched to UTF-8: write it again from the start
            self.notes.append(f"the translations do not fit the catalog's charset {encoding}: wrote it as UTF-8 "
                              f"(its header says so)")
            data = _serialize(self.store)
        return data


# -- XLIFF 1.2 and 2.0 -----------------------------------------------------------------------------

XLIFF_NAMESPACES = {"1": "urn:oasis:names:tc:xliff:document:1.2", "2": "urn:oasis:names:tc:xliff:document:2.0"}
_UNTRANSLATED_STATES = ("new", "needs-translation")  # XLIFF 1.2: a target in these states is no translation yet


def inner_xml(element) -> str:
    """The content of `element` as XML text: 'Replace <g id="1">custom</g> quotes'."""
    from xml.sax.saxutils import escape

    namespace = etree.QName(element).namespace
    pieces = [escape(element.text or "")]
    for child in element:
        markup = etree.tostring(child, encoding="unicode", with_tail=True)
        pieces.append(markup.replace(f' xmlns="{namespace}"', "") if namespace else markup)
    return "".join(pieces)


def _set_inner_xml(element, markup: str) -> bool:
    """Replace the content of `element` with `markup` (XML text); False where it is not well-formed."""
    from translate.misc.xml_helpers import parse_xml

    namespace = etree.QName(element).namespace
    try:
        wrapper = parse_xml(f'<w xmlns="{namespace}">{markup}</w>' if namespace else f"<w>{markup}</w>")
    except etree.XMLSyntaxError:
        return False
    for child in list(element):
        element.remove(child)
    element.text = wrapper.text
    element.extend(list(wrapper))
    return True


class XliffDocument:
    """An XLIFF 1.2 or 2.0 file, through translate-toolkit's xliff / xliff2 (units, states, notes).

    A segment is the XML content of <source>, inline elements and entities
    included ('Delete ~All Comments by <ph id="1">$1</ph>'), so that the
    protected-spans layer keeps them; the translation is parsed back into <target>.
    """

    def __init__(self, data: bytes, name: str):
        from translate.misc.xml_helpers import parse_xml
        from translate.storage import xliff, xliff2

        self.name = name
        self.notes: list[str] = []
        try:
            root = parse_xml(data)
        except etree.XMLSyntaxError as error:
            if "encoding" in error.msg.lower():  # libxml2 names no byte: find it by decoding
                declared = re.match(rb"""<\?xml[^>]*encoding=["']([A-Za-z0-9._-]+)""", data)
                if declared:
                    decode(data, declared.group(1).decode(), name, "save it in the encoding its XML declaration "
                                                                    "names, or correct the declaration")
                decode(data, "utf-8", name, 'add encoding="..." to the XML declaration or save it as UTF-8')
            raise FileError(f"{name}: line {error.lineno}: is not well-formed XML: {' '.join(error.msg.split())}; "
                            f"fix that line") from None
        version = root.get("version", "")
        if etree.QName(root).localname != "xliff" or version[:1] not in XLIFF_NAMESPACES:
            raise FileError(f"{name} is not XLIFF 1.2 or 2.0 (its root is <{etree.QName(root).localname}> "
                            f"version {version!r}); give an XLIFF file or one of the other formats")
        self.version = version[:1]
        store_class = xliff.Xliff1File if self.version == "1" else xliff2.Xliff2File
        self.store = store_class.parsestring(data)
        # Characters the declared encoding lacks are written as character references, which every XML
        # reader takes for the characters themselves (the toolkit would fail on them).
        self.store.serialize_hook = lambda text: text.encode(self.store.encoding, "xmlcharrefreplace")

    def _language(self) -> str | None:
        return self.store.gettargetlanguage()

    def entries(self, target: str, *, retranslate: bool, previous: bytes | None = None) -> list[Entry]:
        keep_existing = not retranslate and (_same_language(self._language(), target) or not self._language())
        earlier = XliffDocument(previous, self.name).translated_units() if previous else {}
        self.store.settargetlanguage(target)
        entries = []
        for unit in self.store.units:
            source = unit.get_source_dom()
            if not unit.istranslatable() or source is None or not inner_xml(source).strip():
                continue
            key = unit.getid() or ""
            if keep_existing and self._translated(unit):
                entries.append(Entry(key=key, segments=[]))
                continue
            if key in earlier and inner_xml(earlier[key].get_source_dom()) == inner_xml(source):
                self._copy_translation(earlier[key], unit)  # the earlier output's, of the same source
                entries.append(Entry(key=key, segments=[]))
                continue
            entries.append(Entry(key=key, segments=[inner_xml(source)],
                                 write=lambda results, unit=unit: self._write(unit, results[0])))
        return entries

    def _translated(self, unit) -> bool:
        target = unit.get_target_dom()
        if target is None or not inner_xml(target).strip():
            return False
        return self.version == "2" or target.get("state") not in _UNTRANSLATED_STATES

    def translated_units(self) -> dict[str, Any]:
        """{unit id: unit} of the translatable units that have a translation (of an earlier output)."""
        return {unit.getid() or "": unit for unit in self.store.units
                if unit.istranslatable() and unit.get_source_dom() is not None and self._translated(unit)}

    def _copy_translation(self, earlier, unit) -> None:
        unit.settarget("")  # creates <target> where there is none
        target, earlier_target = unit.get_target_dom(), earlier.get_target_dom()
        _set_inner_xml(target, inner_xml(earlier_target))
        # Its review state comes along: XLIFF 1.2 keeps it on <target>, 2.0 on <segment>.
        state_holder, earlier_holder = (target, earlier_target) if self.version == "1" else (
            unit.xmlelement, earlier.xmlelement)
        for attribute in ("state", "state-qualifier", "subState"):
            if earlier_holder.get(attribute) is not None:
                state_holder.set(attribute, earlier_holder.get(attribute))
            elif attribute in state_holder.attrib:
                del state_holder.attrib[attribute]

    def _write(self, unit, result) -> tuple[str, ...]:
        problems = _problems([result])
        unit.settarget("")  # creates <target> where there is none
        target = unit.get_target_dom()
        if not _set_inner_xml(target, result.text):
            target.text = result.text  # kept as text for the reviewer; the flag says why
            problems += ("the translation's inline markup is not well-formed XML",)
        if self.version == "1":
            target.set("state", "needs-review-translation")
            target.set("state-qualifier", "mt-suggestion")
            unit.removenotes(origin=NOTE_PREFIX)
            if problems:
                unit.addnote(problems_note(problems), origin=NOTE_PREFIX)
        else:
            unit.xmlelement.set("state", "initial")  # XLIFF 2.0: not yet translated by a person
            self._set_note_2(unit, problems_note(problems) if problems else MT_NOTE)
        return problems

    def _set_note_2(self, unit, text: str) -> None:
        """Put `text` in the <notes> of the segment's <unit>, replacing an earlier note of ours (XLIFF 2.0).

        Notes belong to a unit; in a unit of several segments the note names its segment."""
        namespace = XLIFF_NAMESPACES["2"]
        unit_element = unit.getunitelement()
        notes = unit_element.find(f"{{{namespace}}}notes")
        if notes is None:  # the spec's order: <notes> before <originalData> and the segments
            notes = etree.Element(f"{{{namespace}}}notes")
            first = next(child for child in unit_element if etree.QName(child).localname in
                         ("originalData", "segment", "ignorable"))
            first.addprevious(notes)
        segments = unit_element.findall(f"{{{namespace}}}segment")
        segment = unit.xmlelement.get("id") or segments.index(unit.xmlelement) + 1
        label = f"segment {segment}: " if len(segments) > 1 else ""
        for note in notes.findall(f"{{{namespace}}}note"):
            if note.get("category") == NOTE_PREFIX and (note.text or "").startswith(label):
                notes.remove(note)
        note = etree.SubElement(notes, f"{{{namespace}}}note", category=NOTE_PREFIX, appliesTo="target")
        note.text = label + text

    def serialize(self) -> bytes:
        return _serialize(self.store)


# -- .properties -----------------------------------------------------------------------------------


class PropertiesDocument:
    """A Java or Mozilla `.properties` file, through translate-toolkit's properties.

    Encoding, by Java's convention: UTF-8 text stays UTF-8 (Mozilla, Java 9+); a
    file that is not UTF-8 is ISO-8859-1 (Java's ResourceBundle before Java 9),
    and stays so, with characters beyond it written as \\uXXXX; a pure ASCII file
    stays ASCII, every other character written as \\uXXXX, which both readings take.
    """

    def __init__(self, data: bytes, name: str):
        from translate.storage import properties

        self.name = name
        self.notes: list[str] = []
        try:
            text = data.decode("utf-8")
            encoding, personality = ("us-ascii", "java") if data.isascii() else ("utf-8", "java-utf8")
        except UnicodeDecodeError:
            text, encoding, personality = data.decode("iso-8859-1"), "iso-8859-1", "java"
        # Handed over as UTF-8 with encoding="utf-8", so that the toolkit's own guess has no say: it
        # asks charset_normalizer, which takes a Latin-1 "René" for windows-1250.
        self.store = properties.propfile(personality=personality, encoding="utf-8")
        try:
            self.store.parse(text.encode("utf-8"))
        except ValueError as error:
            raise FileError(f"{name} is not a valid .properties file: {error}; fix that line") from None
        self.store.encoding = encoding

    def entries(self, target: str, *, retranslate: bool, previous: bytes | None = None) -> list[Entry]:
        del target, retranslate  # the file is a source: `previous` holds what was translated before
        kept = PropertiesDocument(previous, self.name).translations() if previous else {}
        entries = []
        for unit in self.store.units:
            if not unit.istranslatable() or not unit.source.strip():
                continue
            if unit.name.rsplit(".", 1)[-1].lower() in SHORTCUT_NAMES:
                continue  # see SHORTCUT_NAMES
            if unit.name in kept:
                value, comments = kept[unit.name]
                unit.target = value
                unit.comments += comments
                entries.append(Entry(key=unit.name, segments=[]))
                continue
            entries.append(Entry(key=unit.name, segments=[unit.source],
                                 write=lambda results, unit=unit: self._write(unit, results[0])))
        return entries

    def translations(self) -> dict[str, tuple[str, list[str]]]:
        """{key: (value, our comments)} of a file written before (an earlier output)."""
        return {unit.name: (unit.source, [line for line in unit.comments if line.startswith(f"# {NOTE_PREFIX}")])
                for unit in self.store.units if unit.istranslatable() and unit.source}

    @staticmethod
    def _write(unit, result) -> tuple[str, ...]:
        problems = _problems([result])
        unit.target = result.text
        unit.comments.append(f"# {problems_note(problems) if problems else MT_NOTE}")
        return problems

    def serialize(self) -> bytes:
        return _serialize(self.store)


# -- Fluent .ftl -----------------------------------------------------------------------------------


class FluentDocument:
    """A Fluent resource (`.ftl`), through fluent.syntax (see the module docstring).

    The segments of a pattern are its runs of text and simple placeables between
    select expressions ('{ $current } of { $total } match'); each variant of a
    select expression is a pattern of its own. Fluent's default variant (*[other])
    covers the plural categories a target language has and English lacks, so the
    variants stay as they are. Shortcut attributes (SHORTCUT_NAMES) and a term's
    attributes (grammatical data of the target language) are not translated.
    """

    def __init__(self, data: bytes, name: str):
        from fluent.syntax import ast, parse

        self.name = name
        self.notes: list[str] = []
        self.text = decode(data, "utf-8", name, "Fluent files are UTF-8: save it as UTF-8")
        self.resource = parse(self.text)
        for entry in self.resource.body:
            if isinstance(entry, ast.Junk):
                annotation = entry.annotations[0]  # the line the broken entry starts on: the error may be at its end
                raise FileError(f"{name}: line {line_of(self.text, entry.span.start)}: not valid Fluent "
                                f"({annotation.code}: {annotation.message}); fix that line")
        self.rewritten: dict[int, Any] = {}  # index in resource.body -> the entry to write there

    def entries(self, target: str, *, retranslate: bool, previous: bytes | None = None) -> list[Entry]:
        from fluent.syntax import ast

        del target, retranslate
        kept = FluentDocument(previous, self.name).messages() if previous else {}
        entries = []
        for index, entry in enumerate(self.resource.body):
            if not isinstance(entry, (ast.Message, ast.Term)):
                continue
            key = ("-" if isinstance(entry, ast.Term) else "") + entry.id.name
            if key in kept:
                self.rewritten[index] = kept[key]
                entries.append(Entry(key=key, segments=[]))
                continue
            patterns = [entry.value] if entry.value is not None else []
            if isinstance(entry, ast.Message):
                patterns += [attribute.value for attribute in entry.attributes
                             if attribute.id.name.lower() not in SHORTCUT_NAMES]
            runs = [run for pattern in patterns for run in _runs(pattern)]
            runs = [run for run in runs if _run_text(run[1]).strip()]
            if runs:
                entries.append(Entry(key=key, segments=[_run_text(elements).strip() for _, elements in runs],
                                     write=lambda results, index=index, runs=runs: self._write(index, runs, results)))
        return entries

    def messages(self) -> dict[str, Any]:
        """{message or term id: its entry} of a file written before (an earlier output)."""
        from fluent.syntax import ast

        return {("-" if isinstance(entry, ast.Term) else "") + entry.id.name: entry for entry in self.resource.body
                if isinstance(entry, (ast.Message, ast.Term))}

    def _write(self, index: int, runs, results) -> tuple[str, ...]:
        from fluent.syntax import ast

        problems = _problems(results)
        for (pattern, elements), result in zip(runs, results):
            translated = _parse_run(result.text)
            if translated is None:
                problems += (f"the translation {result.text!r} is not valid Fluent",)
                continue
            text = _run_text(elements)
            lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
            new = ([ast.TextElement(lead)] if lead else []) + translated + ([ast.TextElement(trail)] if trail else [])
            start = next(i for i, element in enumerate(pattern.elements) if element is elements[0])
            pattern.elements[start: start + len(elements)] = new
        entry = self.resource.body[index]
        lines = [line for line in (entry.comment.content.split("\n") if entry.comment else [])
                 if not line.startswith(NOTE_PREFIX)]
        entry.comment = ast.Comment("\n".join([*lines, problems_note(problems) if problems else MT_NOTE]))
        self.rewritten[index] = entry
        return problems

    def serialize(self) -> bytes:
        from fluent.syntax.serializer import FluentSerializer

        serializer = FluentSerializer()
        pieces, position = [], 0
        for index in sorted(self.rewritten):
            original = self.resource.body[index]
            pieces += [self.text[position: original.span.start],
                       serializer.serialize_entry(self.rewritten[index]).rstrip("\n")]
            position = original.span.end
        pieces.append(self.text[position:])
        return "".join(pieces).encode("utf-8")


def _runs(pattern) -> list[tuple[Any, list]]:
    """(pattern, elements) of each run of text and simple placeables in `pattern`, select variants included."""
    from fluent.syntax import ast

    runs, current = [], []
    for element in pattern.elements:
        if isinstance(element, ast.Placeable) and isinstance(element.expression, ast.SelectExpression):
            if current:
                runs.append((pattern, current))
                current = []
            for variant in element.expression.variants:
                runs += _runs(variant.value)
        else:
            current.append(element)
    if current:
        runs.append((pattern, current))
    return runs


def _run_text(elements) -> str:
    from fluent.syntax.serializer import serialize_element

    return "".join(serialize_element(element) for element in elements)


def _parse_run(text: str) -> list | None:
    """The pattern elements of a translated run, None where it is no valid simple Fluent pattern."""
    from fluent.syntax import ast, parse

    lines = text.split("\n")
    resource = parse("x = " + "\n".join([lines[0], *("    " + line for line in lines[1:])]) + "\n")
    if len(resource.body) != 1 or not isinstance(resource.body[0], ast.Message):
        return None
    message = resource.body[0]
    if message.value is None or message.attributes:
        return None
    return list(message.value.elements)


# -- plain text ------------------------------------------------------------------------------------


class TextDocument:
    """A UTF-8 text file, through translate-toolkit's txt: its paragraphs and the line each starts on.

    Each line is one segment, as in the web UI's .txt translation; the output is
    the input with each line replaced by its translation (indentation, blank
    lines and the final newline kept). A text file has no place for review marks:
    what was flagged is in the summary only.
    """

    def __init__(self, data: bytes, name: str):
        from translate.storage import txt

        self.name = name
        self.notes: list[str] = []
        text = decode(data, "utf-8", name, "save it as UTF-8")
        self.lines = text.replace("\r\n", "\n").split("\n")
        self.store = txt.TxtFile()
        self.store.parse(text.replace("\r\n", "\n").encode("utf-8"))

    def entries(self, target: str, *, retranslate: bool, previous: bytes | None = None) -> list[Entry]:
        del target, retranslate, previous  # a text file has no keys to keep earlier translations by
        entries = []
        for unit in self.store.units:
            first = unit._line_number - 1  # TxtFile's record of the line a paragraph starts on
            for number in range(first, first + len(unit.source.split("\n"))):
                if self.lines[number].strip():
                    entries.append(Entry(key=f"line {number + 1}", segments=[self.lines[number].strip()],
                                         write=lambda results, number=number: self._write(number, results[0])))
        return entries

    def _write(self, number: int, result) -> tuple[str, ...]:
        line = self.lines[number]
        self.lines[number] = line[: len(line) - len(line.lstrip())] + result.text.strip()
        return _problems([result])

    def serialize(self) -> bytes:
        return "\n".join(self.lines).encode("utf-8")


@dataclasses.dataclass(frozen=True)
class Format:
    """A file format: how to read it and where its translation goes.

    output_name(input file name, target code) -> the output's path relative to the output folder.
    """

    name: str
    extensions: tuple[str, ...]
    read: Callable[[bytes, str], Any]
    output_name: Callable[[str, str], str]


def _stem_and_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    return (stem, dot + extension) if stem else (name, "")


FORMATS = (
    # gettext: one catalog per language, named by its gettext code (de.po, pt_BR.po), as msginit does.
    Format("gettext", (".po", ".pot"), PoDocument, lambda name, code: f"{code.replace('-', '_')}.po"),
    # Angular, Symfony and Okapi: messages.de.xlf beside messages.xlf.
    Format("XLIFF", (".xlf", ".xliff"), XliffDocument,
           lambda name, code: "{0}.{2}{1}".format(*_stem_and_extension(name), code)),
    # Java's ResourceBundle: messages_de.properties, messages_pt_BR.properties.
    Format(".properties", (".properties",), PropertiesDocument,
           lambda name, code: f"{_stem_and_extension(name)[0]}_{code.replace('-', '_')}.properties"),
    # Mozilla's l10n repositories: one folder per locale holding the same file names (de/browser.ftl).
    Format("Fluent", (".ftl",), FluentDocument, lambda name, code: f"{code}/{name}"),
    # As the web UI's /translate_file: notes.de.txt.
    Format("text", (".txt",), TextDocument, lambda name, code: f"{_stem_and_extension(name)[0]}.{code}.txt"),
)
EXTENSIONS = {extension: fmt for fmt in FORMATS for extension in fmt.extensions}


def format_of(name: str) -> Format:
    """The format of a file name by its extension; FileError listing the known ones otherwise."""
    extension = _stem_and_extension(name)[1].lower()
    if extension not in EXTENSIONS:
        known = ", ".join(sorted(EXTENSIONS))
        raise FileError(f"{name}: unknown format {extension or '(no extension)'!r}; give a file ending in {known}")
    return EXTENSIONS[extension]
