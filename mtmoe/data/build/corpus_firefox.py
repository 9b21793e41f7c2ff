"""Firefox ESR language packs (`firefox-esr-l10n-XX`) -> (English, translation) pairs.

A language pack is one `.xpi` (a zip) holding Fluent `.ftl` files and legacy
`.properties` files. The English originals are inside `firefox-esr` itself,
in its two `omni.ja` archives (also zips). Files are matched by their path with
the locale parts removed, and strings by key within a file:

    langpack  browser/localization/de/browser/aboutDialog.ftl   update-noUpdatesFound = { -brand-short-name } ist aktuell
    omni.ja   localization/en-US/browser/aboutDialog.ftl        update-noUpdatesFound = { -brand-short-name } is up to date
    -> ("Firefox is up to date", "Firefox ist aktuell")

Fluent handling (a small reader for the subset language packs use): messages,
terms and attributes with multi-line values; term references
(`{ -brand-short-name }`, also with case arguments, taking the term's default
variant), message references and string literals are resolved; variables stay
as `{ $name }` on both sides; a message or attribute whose value holds a
selector (`{ $n -> [one] ... *[other] ... }`) or a function call is dropped, as
are access keys and style attributes. `.properties`: `key = value` lines with
`\\` continuations and `\\uXXXX` escapes; access keys and plural-form lists
(`#1 tab;#1 tabs`) are dropped.
"""

from __future__ import annotations

import json
import re
import zipfile

_ENTRY = re.compile(r"^(-?[A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]*(.*)$")
_ATTRIBUTE = re.compile(r"^[ \t]+\.([A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]*(.*)$")
_PLACEABLE = re.compile(r"\{([^{}]*)\}")
_STRING_LITERAL = re.compile(r'\{\s*"((?:[^"\\]|\\.)*)"\s*\}')
_DEFAULT_VARIANT = re.compile(r"^\s*\*\[[^\]]*\]\s*(.*)$")
_SKIPPED_ATTRIBUTE = re.compile(r"(access|command)?key$|keybinding|style|width|height|^size", re.IGNORECASE)
_SKIPPED_PROPERTY = re.compile(r"(access|command|short)?key$|keybinding|\.key\d*$|style|width|height", re.IGNORECASE)


class _Unresolvable(Exception):
    """A placeable this reader does not resolve (selector, function call, unknown id)."""


def read_fluent_raw(text: str) -> dict[str, str]:
    """Fluent source -> {"id": raw pattern, "id.attr": raw pattern}, terms keyed "-id".

    Multi-line patterns keep their lines joined by "\\n" (indentation removed);
    placeables are not resolved yet.
    """
    entries: dict[str, list[str]] = {}
    current: str | None = None
    message: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current is not None:
                entries[current].append("")
            continue
        if line.startswith("#"):
            current = message = None
            continue
        entry = _ENTRY.match(line)
        if entry and not line[0].isspace():
            message = current = entry.group(1)
            entries[current] = [entry.group(2)]
            continue
        attribute = _ATTRIBUTE.match(line)
        if attribute and message is not None:
            current = f"{message}.{attribute.group(1)}"
            entries[current] = [attribute.group(2)]
            continue
        if current is not None and line[0].isspace():
            entries[current].append(line.strip())
        else:
            current = message = None       # junk: skip until the next entry
    return {key: "\n".join(lines).strip() for key, lines in entries.items()}


def _term_default(pattern: str) -> str:
    """A term's value; for a term with variants, its default `*[...]` variant."""
    if "->" not in pattern:
        return pattern
    for line in pattern.splitlines():
        default = _DEFAULT_VARIANT.match(line)
        if default:
            return default.group(1).strip()
    raise _Unresolvable(pattern)


def _resolve(pattern: str, *, messages: dict[str, str], terms: dict[str, str], depth: int = 0) -> str:
    if depth > 5:
        raise _Unresolvable("reference cycle")
    if "->" in pattern:
        raise _Unresolvable("selector")

    def replace(match: re.Match) -> str:
        inner = match.group(1).strip()
        if re.fullmatch(r"\$[A-Za-z][\w-]*", inner):
            return "{ " + inner + " }"
        term = re.fullmatch(r"(-[A-Za-z][\w-]*)(\.[\w-]+)?\s*(\(.*\))?", inner)
        if term:
            key = term.group(1) + (term.group(2) or "")
            if key not in terms:
                raise _Unresolvable(inner)
            return _resolve(_term_default(terms[key]), messages=messages, terms=terms, depth=depth + 1)
        reference = re.fullmatch(r"[A-Za-z][\w-]*(\.[\w-]+)?", inner)
        if reference and inner in messages:
            return _resolve(messages[inner], messages=messages, terms=terms, depth=depth + 1)
        raise _Unresolvable(inner)

    # String literals first (`{ "{" }` holds a brace the placeable pattern
    # cannot); they wait in private-use characters until the end.
    literals: list[str] = []

    def stash(match: re.Match) -> str:
        literals.append(match.group(1).replace('\\"', '"').replace("\\\\", "\\"))
        return chr(0xF0000 + len(literals) - 1)

    pattern = _STRING_LITERAL.sub(stash, pattern)
    resolved = _PLACEABLE.sub(replace, pattern)
    if re.sub(r"\{ \$[\w-]+ \}", "", resolved).count("{") or "}" in re.sub(r"\{ \$[\w-]+ \}", "", resolved):
        raise _Unresolvable("nested placeable")
    resolved = re.sub("[\U000F0000-\U000F00FF]", lambda m: literals[ord(m.group(0)) - 0xF0000], resolved)
    return " ".join(resolved.split())


def resolve_fluent(raw: dict[str, str], *, terms: dict[str, str]) -> dict[str, str]:
    """Raw Fluent entries -> {key: text} for the messages and attributes that
    resolve to plain text (terms themselves, selectors, access keys left out)."""
    resolved = {}
    for key, pattern in raw.items():
        if key.startswith("-") or not pattern:
            continue
        attribute = key.partition(".")[2]
        if attribute and _SKIPPED_ATTRIBUTE.search(attribute):
            continue
        try:
            text = _resolve(pattern, messages=raw, terms=terms)
        except _Unresolvable:
            continue
        if text:
            resolved[key] = text
    return resolved


def read_properties(text: str) -> dict[str, str]:
    """A Java-style `.properties` file -> {key: value} (access keys and
    plural-form lists left out)."""
    entries = {}
    logical_lines, pending = [], ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if not pending and (not stripped or stripped[0] in "#!"):
            continue
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        if trailing % 2 == 1:
            pending += stripped[:-1]
            continue
        logical_lines.append(pending + stripped)
        pending = ""
    for line in logical_lines:
        match = re.match(r"((?:[^=:\s\\]|\\.)+)\s*[=:]?\s*(.*)$", line)
        if not match:
            continue
        key, value = match.group(1), _unescape_properties(match.group(2))
        if _SKIPPED_PROPERTY.search(key) or (";" in value and ("#1" in value or "plural" in key.lower())):
            continue
        if value.strip():
            entries[key] = " ".join(value.split())
    return entries


def _unescape_properties(value: str) -> str:
    value = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), value)


def normalise_path(path: str, *, locale: str) -> str:
    """A localisation file's path with the locale parts removed, the same for the
    language pack and for omni.ja:

    >>> normalise_path("browser/chrome/de/locale/browser/x.properties", locale="de")
    'chrome/locale/browser/x.properties'
    >>> normalise_path("chrome/en-US/locale/browser/x.properties", locale="en-US")
    'chrome/locale/browser/x.properties'
    """
    parts = path.split("/")
    if parts[0] == "browser":
        parts = parts[1:]
    return "/".join(part for part in parts if part != locale)


def read_archive(path: str, *, locale: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """One zip (language pack .xpi or omni.ja) -> ({normalised file path:
    {key: raw value}}, terms) for its .ftl and .properties files."""
    files: dict[str, dict[str, str]] = {}
    terms: dict[str, str] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith((".ftl", ".properties")):
                continue
            if f"/{locale}/" not in f"/{name}":
                continue               # not a localisation file of this locale
            text = archive.read(name).decode("utf-8", errors="replace")
            key = normalise_path(name, locale=locale)
            if name.endswith(".ftl"):
                raw = read_fluent_raw(text)
                terms.update({k: v for k, v in raw.items() if k.startswith("-")})
                files[key] = raw
            else:
                files[key] = read_properties(text)
    return files, terms


def langpack_locale(xpi_path: str) -> str:
    """The locale a language pack declares (`langpack_id` in its manifest)."""
    with zipfile.ZipFile(xpi_path) as archive:
        return json.loads(archive.read("manifest.json"))["langpack_id"]


def resolved_strings(files: dict[str, dict[str, str]], terms: dict[str, str]) -> dict[str, str]:
    """{"file|key": text} with Fluent placeables resolved against `terms`."""
    strings = {}
    for file_key, raw in files.items():
        entries = resolve_fluent(raw, terms=terms) if file_key.endswith(".ftl") else raw
        for key, text in entries.items():
            strings[f"{file_key}|{key}"] = text
    return strings


def align_firefox(english: dict[str, str], translated: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs for the keys both sides have whose `{ $variables }` agree."""
    pairs = []
    for key, source in english.items():
        target = translated.get(key)
        if target is None:
            continue
        if sorted(re.findall(r"\{ \$[\w-]+ \}", source)) != sorted(re.findall(r"\{ \$[\w-]+ \}", target)):
            continue
        pairs.append((source, target))
    return pairs
