"""The placeholder evaluation set: software strings with placeholders and markup, from products not in the corpus.

    python -m mtmoe.data.build.placeholder_eval          # data/placeholders/test.tsv.gz and sources.json
    python -m mtmoe.data.build.placeholder_eval --per-language 50 --out /tmp/placeholders.tsv.gz

The embedded corpus holds LibreOffice and Firefox strings, so this set comes
from other programs' gettext catalogs, as Debian ships them compiled
(`/usr/share/locale/<locale>/LC_MESSAGES/*.mo`): GIMP, GTK, GLib, VLC,
Inkscape, Gramps and Dolphin (`PACKAGES`; Mozilla Thunderbird is kept out of
every set this project builds: it is reserved for an external evaluation).
An entry is kept when

- its English holds at least one protected span (`mtmoe.protected_spans`)
  and some text between them to translate ("%s: %s" alone is left out: there
  is nothing for a model to do),
- the translation in every one of `LANGUAGES` holds exactly the same spans,
  as many times each (in any order), so the reference itself keeps them,
- it has no accelerator mark (`_Open`, `&Open`: where a mark goes in a
  translation is a translator's choice, not a span to keep),
- its English is at most `MAX_CHARS` characters, and is not in the embedded
  corpus (any language, any split; compared with the spans taken out, as
  `corpus_clean.normalise_english` normalises).

Plural entries give their singular and their first translated form. The
English segments are chosen in a fixed hash order, taking from each package
in turn, so that every language has the same segments and no package
dominates. The file has a header `package  en  de  fr ...` and one English
segment a row; because segments hold line breaks, tabs and backslashes, each
cell is escaped (`\\n`, `\\t`, `\\r`, `\\\\`): read it with `read_eval_set`.
`sources.json` beside it records each package's version, licence and the
rows it gave.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence

from mtmoe.data import layouts, readers
from mtmoe.data.build import corpus_clean, corpus_gettext, corpus_packages
from mtmoe.protected_spans import find_spans

DEFAULT_OUT = os.fspath(layouts.DATA_DIR / "placeholders" / "test.tsv.gz")
# Debian package -> licence of its translations (the package's debian/copyright).
PACKAGES = {
    "gimp-data": "GPL-3+",
    "libgtk-3-common": "LGPL-2+",
    "libglib2.0-data": "LGPL-2.1+",
    "vlc-l10n": "GPL-2+",
    "inkscape": "GPL-2+",
    "gramps": "GPL-2+",
    "dolphin": "GPL-2+",
}
# Corpus code -> gettext locale directory.
LANGUAGES = {"de": "de", "fr": "fr", "es": "es", "it": "it", "pt-BR": "pt_BR", "ru": "ru", "ja": "ja",
             "zh-Hans": "zh_CN"}
DEFAULT_PER_LANGUAGE = 150  # x 8 languages x each strategy measured: minutes, not hours, on 2 CPU cores
MAX_CHARS = 200             # UI strings, not help pages: longer entries are paragraphs of documentation
# GTK's "_Open" (an underscore opening a word) and KDE's "&Open" (an ampersand before a letter, not an entity).
_ACCELERATOR = re.compile(r"(?<![\w_])_(?=[^\W_])|&(?=[^\W\d_])(?![A-Za-z][\w.-]*;)")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {value[1]: key for key, value in _ESCAPES.items()}


def escape_cell(text: str) -> str:
    r"""A cell of the set's TSV: `a\tb` -> `a\\tb`, so a cell holds no tab or line break.

    >>> escape_cell("Line\n\\n")
    'Line\\n\\\\n'
    """
    return "".join(_ESCAPES.get(char, char) for char in text)


def unescape_cell(cell: str) -> str:
    r"""The inverse of `escape_cell`.

    >>> unescape_cell(escape_cell("tab\there\\n")) == "tab\there\\n"
    True
    """
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(0)), cell)


@dataclasses.dataclass(frozen=True)
class Segment:
    """One English segment and its reference translation per language."""

    package: str
    english: str
    references: dict[str, str]


def read_eval_set(path: str = DEFAULT_OUT) -> list[Segment]:
    """The segments of a set written by this module, in file order."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: build it with python -m mtmoe.data.build.placeholder_eval")
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["package", "en"]:
            raise ValueError(f"{path}: header {header[:2]} is not ['package', 'en', ...]; rebuild it")
        languages = header[2:]
        segments = []
        for number, line in enumerate(f, start=2):
            cells = line.rstrip("\n").split("\t")
            if len(cells) != len(header):
                raise ValueError(f"{path}:{number}: {len(cells)} cells for {len(header)} columns")
            cells = [unescape_cell(cell) for cell in cells]
            segments.append(Segment(cells[0], cells[1], dict(zip(languages, cells[2:]))))
    return segments


def span_counts(text: str) -> collections.Counter:
    """How many times each recognised span text occurs in `text`."""
    return collections.Counter(text[start:end] for start, end, _ in find_spans(text))


def without_spans(text: str) -> str:
    """`text` with its spans cut out: the words a model has to translate."""
    pieces, position = [], 0
    for start, end, _ in find_spans(text):
        pieces.append(text[position:start])
        position = end
    return " ".join(pieces + [text[position:]])


def corpus_key(text: str) -> str:
    """The form two English segments are compared in: spans cut out, then the split's normalisation."""
    return corpus_clean.normalise_english(without_spans(text))


def corpus_english(root: str | os.PathLike = layouts.EMBEDDED_DIR) -> set[str]:
    """`corpus_key` of every English sentence of the embedded corpus, all languages and splits."""
    keys = set()
    for split in ("train", "dev", "test"):
        for path in layouts.embedded_files(root, split).values():
            keys.update(corpus_key(english) for english, _ in readers.read_tsv(os.fspath(path)))
    return keys


def catalog_entries(unpacked: str, locale: str) -> dict[tuple[str, str], str]:
    """{(context, English): translation} of every translated entry of a package's catalogs in `locale`.

    Read by the corpus builder's own reader (`corpus_gettext.read_mo`); the
    translate-toolkit's refuses the revision 1 catalogs GLib ships."""
    entries = {}
    for path in sorted(glob.glob(os.path.join(unpacked, "usr", "share", "locale", locale, "LC_MESSAGES", "*.mo"))):
        with open(path, "rb") as f:
            for context, english, translation in corpus_gettext.read_mo(f.read()):
                # A byte order mark some catalogs carry inside a string is not part of the text.
                entries[(context, english)] = translation.removeprefix("\ufeff")
    return entries


def qualifies(english: str, translations: Sequence[str]) -> bool:
    """Whether an entry belongs in the set (see the module docstring)."""
    spans = span_counts(english)
    if not spans or len(english) > MAX_CHARS or _ACCELERATOR.search(english):
        return False
    if not any(char.isalpha() for char in without_spans(english)):
        return False
    return all(span_counts(translation) == spans for translation in translations)


def _order(package: str, english: str) -> bytes:
    return hashlib.sha256(f"{package}\t{english}".encode("utf-8")).digest()


def build(*, out: str = DEFAULT_OUT, per_language: int = DEFAULT_PER_LANGUAGE, cache_dir: str =
          corpus_packages.DEFAULT_CACHE, log=print) -> dict:
    """Writes the set to `out` (and sources.json beside it); returns what sources.json holds."""
    debs = corpus_packages.download(list(PACKAGES), cache_dir=cache_dir, log=log)
    missing = sorted(set(PACKAGES) - set(debs))
    if missing:
        raise SystemExit(f"placeholder_eval: could not get {', '.join(missing)} (see the lines above); nothing written")
    log("reading the embedded corpus' English to leave it out")
    known = corpus_english()
    candidates: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for package, deb in debs.items():
        with tempfile.TemporaryDirectory(prefix="mtmoe-placeholders-") as unpacked:
            corpus_packages.unpack(deb, into=unpacked)
            catalogs = {code: catalog_entries(unpacked, locale) for code, locale in LANGUAGES.items()}
        shared = set.intersection(*(set(entries) for entries in catalogs.values()))
        chosen = {}
        for key in shared:
            english = key[1]
            translations = {code: catalogs[code][key] for code in LANGUAGES}
            if english not in chosen and qualifies(english, list(translations.values())) \
                    and corpus_key(english) not in known:
                chosen[english] = translations
        candidates[package] = sorted(chosen.items(), key=lambda item: _order(package, item[0]))
        log(f"{package} {corpus_packages.deb_version(deb)}: {len(chosen)} segments qualify")
    # One from each package in turn (in PACKAGES order), until the set is full or they run out.
    rows, taken, seen = [], collections.Counter(), set()
    queues = {package: collections.deque(candidates[package]) for package in PACKAGES}
    while len(rows) < per_language and any(queues.values()):
        for package, queue in queues.items():
            while queue and len(rows) < per_language:
                english, translations = queue.popleft()
                if english in seen:  # the same string in two products counts once
                    continue
                seen.add(english)
                rows.append((package, english, translations))
                taken[package] += 1
                break
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    # mtime=0: the same segments give the same bytes, so a rebuild shows no change in git.
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        lines = ["\t".join(["package", "en", *LANGUAGES])]
        lines += ["\t".join(escape_cell(cell) for cell in [package, english, *(t[c] for c in LANGUAGES)])
                  for package, english, t in rows]
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    os.replace(tmp, out)
    sources = {
        "segments": len(rows),
        "languages": list(LANGUAGES),
        "packages": {package: {"version": corpus_packages.deb_version(debs[package]), "licence": PACKAGES[package],
                               "qualifying": len(candidates[package]), "segments": taken[package]}
                     for package in PACKAGES},
        "kinds": dict(collections.Counter(kind for _, english, _ in rows for _, _, kind in find_spans(english))),
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), "sources.json"), "w") as f:
        json.dump(sources, f, indent=1)
        f.write("\n")
    log(f"wrote {out}: {len(rows)} segments x {len(LANGUAGES)} languages "
        f"({', '.join(f'{p} {n}' for p, n in taken.items())})")
    return sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmoe.data.build.placeholder_eval",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="the .tsv.gz to write (default: %(default)s)")
    parser.add_argument("--per-language", type=int, default=DEFAULT_PER_LANGUAGE,
                        help="English segments, each with every language's translation (default: %(default)s)")
    parser.add_argument("--cache", default=corpus_packages.DEFAULT_CACHE, help="where .deb files are kept")
    args = parser.parse_args(argv)
    if args.per_language < 1:
        parser.error(f"--per-language {args.per_language}: give 1 or more")
    from mtmoe.data.build import log_line

    build(out=args.out, per_language=args.per_language, cache_dir=args.cache, log=log_line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
