"""LibreOffice help pages (`libreoffice-help-XX`) -> paragraphs keyed by page and id.

Every help page is one HTML file under `usr/share/libreoffice/help/<locale>/text/`,
the same page path in every language. Each translatable paragraph or heading
carries a stable id from the help sources (`<p id="par_id3147762">`,
`<h2 id="hd_id3150040">`), so a paragraph is aligned with its English original
by (page path, paragraph id):

    en-US/text/shared/find_toolbar.html  <p id="par_id3147762">The <span class="menuitem">Find</span> toolbar can be used ...
    de/text/shared/find_toolbar.html     <p id="par_id3147762">Die <span class="menuitem">Suchleiste</span> kann ...
    -> ("The Find toolbar can be used ...", "Die Suchleiste kann ...")

Inline markup is dropped and its text kept; of a switch's variants (all
`hidden="true"`: one per platform or module, shown by the page's script) only
the `default...` one is kept, so "Ctrl+click" reads through and not
"Command Ctrl+click"; `%PRODUCTNAME` becomes LibreOffice. A paragraph id that occurs twice on
a page (shared snippets) is keyed with its occurrence number.
"""

from __future__ import annotations

import html.parser
import os
import re

_BLOCK_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6"})
_ID_PATTERN = re.compile(r"(par|hd)_i[di]")
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "noscript"})
_VOID_TAGS = frozenset({"br", "img", "meta", "link", "input", "hr", "wbr", "source", "area", "col"})


class _ParagraphParser(html.parser.HTMLParser):
    """Collects the text of id-carrying paragraphs and headings of one page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[tuple[str, str]] = []   # (id, text) in page order
        self._stack: list[tuple[str, bool]] = []      # (tag, hidden) of open elements
        self._current_id: str | None = None
        self._current_depth = 0
        self._buffer: list[str] = []
        self._hidden_depth = 0
        self._skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in _VOID_TAGS:
            if tag == "br" and self._current_id is not None:
                self._buffer.append(" ")
            return
        attributes = dict(attrs)
        # A switch holds one hidden span per platform or module and a hidden
        # "default..." span that the page's script shows: keep only the default.
        hidden = "hidden" in attributes and not (attributes.get("id") or "").startswith("default")
        self._stack.append((tag, hidden))
        if hidden:
            self._hidden_depth += 1
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        element_id = attributes.get("id") or ""
        if self._current_id is None and tag in _BLOCK_TAGS and _ID_PATTERN.match(element_id):
            self._current_id = element_id
            self._current_depth = len(self._stack)
            self._buffer = []

    def handle_endtag(self, tag):
        if tag in _VOID_TAGS:
            return
        # Pop to the matching open tag (help pages are well formed; be lenient).
        while self._stack:
            open_tag, hidden = self._stack.pop()
            if hidden:
                self._hidden_depth -= 1
            if open_tag in _SKIP_TAGS:
                self._skip_depth -= 1
            if self._current_id is not None and len(self._stack) < self._current_depth:
                self.paragraphs.append((self._current_id, "".join(self._buffer)))
                self._current_id = None
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self._current_id is not None and not self._hidden_depth and not self._skip_depth:
            self._buffer.append(data)


def clean_help_text(text: str) -> str:
    """Whitespace collapsed, `%PRODUCTNAME` spelled out."""
    text = text.replace("%PRODUCTNAME", "LibreOffice").replace("%PRODUCTVERSION", "")
    return re.sub(r"\s+", " ", text).strip()


def parse_page(html_text: str) -> dict[str, str]:
    """One help page -> {paragraph key: text}; the key is the id (`par_id3147762`),
    with `#2`, `#3`, ... appended for repeated ids."""
    parser = _ParagraphParser()
    parser.feed(html_text)
    parser.close()
    paragraphs: dict[str, str] = {}
    seen: dict[str, int] = {}
    for element_id, text in parser.paragraphs:
        seen[element_id] = seen.get(element_id, 0) + 1
        key = element_id if seen[element_id] == 1 else f"{element_id}#{seen[element_id]}"
        text = clean_help_text(text)
        if text:
            paragraphs[key] = text
    return paragraphs


def help_root(unpacked_dir: str) -> str | None:
    """The `help/<locale>/text` directory inside an unpacked help package, or None."""
    base = os.path.join(unpacked_dir, "usr", "share", "libreoffice", "help")
    if not os.path.isdir(base):
        return None
    for locale_dir in sorted(os.listdir(base)):
        text_dir = os.path.join(base, locale_dir, "text")
        if os.path.isdir(text_dir):
            return text_dir
    return None


def read_help_tree(text_dir: str) -> dict[str, str]:
    """All pages under a `text/` directory -> {"<page path>|<paragraph key>": text}."""
    segments: dict[str, str] = {}
    for root, _, files in os.walk(text_dir):
        for file_name in sorted(files):
            if not file_name.endswith(".html"):
                continue
            path = os.path.join(root, file_name)
            page = os.path.relpath(path, text_dir).replace(os.sep, "/")
            with open(path, encoding="utf-8", errors="replace") as f:
                for key, text in parse_page(f.read()).items():
                    segments[f"{page}|{key}"] = text
    return segments


def align_help(english: dict[str, str], translated: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs (English, translation) for the segment keys both sides have."""
    return [(english[key], translated[key]) for key in english if key in translated]
