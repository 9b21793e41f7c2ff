"""Translate software localisation files: `python -m mtmoe.localize IN --to de,fr,ja --out DIR`.

    python -m mtmoe.localize po/writer.pot --to de,fr,ja --out po/         # po/de.po, po/fr.po, po/ja.po
    python -m mtmoe.localize browser.ftl --to de,pt-BR --out l10n/           # l10n/de/browser.ftl, l10n/pt-BR/...
    python -m mtmoe.localize messages.properties --to zh-CN --out out/ --glossary terms.tsv --beam_size 1

Formats and where each output goes (mtmoe/l10n_formats.py reads and writes them
through the translate-toolkit and fluent.syntax):

    .po .pot        gettext      DIR/de.po, DIR/pt_BR.po (msginit's names)
    .xlf .xliff     XLIFF 1.2, 2.0   DIR/messages.de.xlf
    .properties     Java/Mozilla DIR/messages_de.properties (Java's ResourceBundle names)
    .ftl            Fluent       DIR/de/browser.ftl (Mozilla's one folder per locale)
    .txt            plain text   DIR/notes.de.txt (one segment per line, as the web UI's .txt)

Every segment goes through mtmoe.protected_spans (placeholders, markup, entities
and escapes come out as they went in, the glossary's terms are kept or mapped).
Keys, comments, contexts and plural forms are kept; the file's encoding and line
endings too. Every machine translation is marked for review: `#, fuzzy` (gettext),
state="needs-review-translation" (XLIFF 1.2), state="initial" and a note (XLIFF 2.0),
a comment (.properties, Fluent). An entry whose placeholders or markup did not all
come back also gets a comment saying what is wrong. A catalog's plural forms follow
the target's rule (the translate-toolkit's table): the form n = 1 takes gets the
singular translation, every other form the plural one, and where the target has
more forms than English's two a translator comment names the forms to adjust.

Already translated entries are kept unless --retranslate: the translations the
input holds (a catalog or XLIFF file whose language, `Language:`, target-language
or trgLang, is the target or is not declared), and those of an earlier output in
DIR, so that a person's corrections survive a rerun: by msgctxt and msgid in a
catalog, by id and the same source in XLIFF, by key in Fluent and .properties
(which do not record the English a translation was made from: an entry whose
English has changed keeps its old translation until --retranslate).

Each output is written to a temporary file and renamed into place, so an existing
output is replaced only by a complete one. Bad input (a malformed file, an unknown
format, a file over MAX_FILE_BYTES, an encoding that is neither UTF-8 nor declared,
an unknown language) is answered with one line and exit status 2 before any work.
At the end, one line per target: translated, skipped (already translated), flagged.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mtmoe.data import languages as language_lookup
from mtmoe.l10n_formats import FileError, Format, format_of

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_MODEL = os.path.join(REPO_ROOT, "data", "models", "mswitch-release")
# Localisation files are small: LibreOffice Calc's German catalog (sc, Debian 12) is 0.7 MB for 5,500
# strings, Firefox's files tens of kB. 5 MB is ~40,000 strings, hours of decoding on a CPU; a larger file
# is more likely a mistake than a catalog.
MAX_FILE_BYTES = 5_000_000
SEGMENTS_PER_CALL = 32  # one progress step; the Translator batches within it (MAX_BATCH_BUCKET)
_OTHER_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

# translate_segments(texts, target) -> one mtmoe.protected_spans.Restored per text.
TranslateSegments = Callable[[list[str], str], list[Any]]
# progress(segments done, segments in all, target at work)
ProgressCallback = Callable[[int, int, str], Any]


@dataclasses.dataclass(frozen=True)
class Source:
    """A checked input file: its bytes (without a UTF-8 BOM), its format, and what its output must keep."""

    name: str
    data: bytes
    format: Format
    newline: str  # "\r\n" or "\n"
    bom: bytes


@dataclasses.dataclass
class Outcome:
    """What one target language got."""

    target: str
    path: str
    translated: int = 0  # machine-translated entries (the flagged ones included)
    skipped: int = 0  # already translated, kept
    flagged: int = 0  # placeholders or markup did not all come back
    notes: list[str] = dataclasses.field(default_factory=list)

    def counts(self) -> str:
        """'7 translated, 2 skipped (already translated), 1 flagged'."""
        return f"{self.translated} translated, {self.skipped} skipped (already translated), {self.flagged} flagged"

    def summary(self) -> str:
        """'de: 7 translated, 2 skipped (already translated), 1 flagged -> out/de.po'."""
        return f"{self.target}: {self.counts()} -> {self.path}"


def read_source(path: str | os.PathLike, *, max_bytes: int | None = None, name: str | None = None) -> Source:
    """Check and read a localisation file: size, format, encoding, syntax.

    max_bytes: the size limit (default MAX_FILE_BYTES). name: the file name used
    for the format and in messages (default: the path's).
    Raises FileError (one line: what is wrong and what to do).
    """
    name = name or os.path.basename(os.fspath(path))
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if not os.path.isfile(path):
        raise FileError(f"{os.fspath(path)}: no such file; give the path of a .po, .pot, .ftl, .properties, .xlf or "
                        f".txt file")
    fmt = format_of(name)
    size = os.path.getsize(path)
    if size > max_bytes:
        raise FileError(f"{name} is {size:,} bytes, over the limit of {max_bytes:,}; split it into smaller files")
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise FileError(f"{name} is empty; give a file with strings to translate")
    if data.startswith(_OTHER_BOMS):
        raise FileError(f"{name} is UTF-16 or UTF-32; save it as UTF-8")
    bom = codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b""
    data = data[len(bom):]
    newline = "\r\n" if data.count(b"\r\n") * 2 > data.count(b"\n") else "\n"  # the file's majority
    fmt.read(data, name)  # every syntax and encoding error now, before the model is loaded
    return Source(name=name, data=data, format=fmt, newline=newline, bom=bom)


def resolve_targets(codes: str | Sequence[str], supported: Sequence[str]) -> list[str]:
    """The model's codes for `codes` ("de,fr" or a list; any spelling: zh-CN, pt_BR, de_DE), in order, once each.

    Raises FileError naming the first unknown code and the closest supported one.
    """
    if isinstance(codes, str):
        codes = codes.split(",")
    codes = [code.strip() for code in codes if code and code.strip()]
    if not codes:
        raise FileError("no target language given; name one or more, e.g. --to de,fr,ja")
    resolved = []
    for code in codes:
        try:
            match = language_lookup.match_language(code, supported, what="target language")
        except ValueError as error:
            raise FileError(str(error)) from None
        if match not in resolved:
            resolved.append(match)
    return resolved


def read_glossary(path: str | os.PathLike, targets: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """parse_glossary of a UTF-8 file; FileError (one line) when it is missing, too large or not UTF-8."""
    name = os.path.basename(os.fspath(path))
    if not os.path.isfile(path):
        raise FileError(f"glossary {os.fspath(path)}: no such file; give a UTF-8 file with one term a line")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise FileError(f"glossary {name} is {os.path.getsize(path):,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return parse_glossary(data.decode("utf-8-sig"), targets)
    except UnicodeDecodeError as error:
        raise FileError(f"glossary {name}: byte 0x{data[error.start]:02X} at offset {error.start} is not UTF-8; "
                        f"save it as UTF-8") from None


def parse_glossary(text: str, targets: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """{target: {term: fixed translation, or None to keep the term}}, the glossary= of protected_spans.

    One term a line; a line starting with `#` is a comment. A line `term` keeps
    the term untranslated in every language; `term<TAB>translation` puts that
    translation in its place. A first line `term<TAB>de<TAB>fr` names a column
    per language: each row then gives the term's translation in each (empty: kept).

        >>> parse_glossary("LibreOffice\\nspreadsheet\\tTabelle\\n", ["de"])
        {'de': {'LibreOffice': None, 'spreadsheet': 'Tabelle'}}
        >>> parse_glossary("term\\tde\\tfr\\nWriter\\t\\tWriter\\nspreadsheet\\tTabelle\\ttableur\\n", ["fr"])
        {'fr': {'Writer': 'Writer', 'spreadsheet': 'tableur'}}
    """
    rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    columns = None
    if rows and rows[0][0].strip().lower() == "term" and len(rows[0]) > 1:
        header = [cell.strip() for cell in rows.pop(0)[1:]]
        columns = {target: next((i for i, code in enumerate(header) if _same(code, target)), None)
                   for target in targets}
    glossary: dict[str, dict[str, str | None]] = {target: {} for target in targets}
    for row in rows:
        term, cells = row[0].strip(), [cell.strip() for cell in row[1:]]
        for target in targets:
            column = 0 if columns is None else columns[target]
            translation = cells[column] if column is not None and column < len(cells) else ""
            glossary[target][term] = translation or None
    return glossary


def _same(code: str, target: str) -> bool:
    try:
        return language_lookup.match_language(code, [target]) == target
    except ValueError:
        return False


def protected_translation(translator, *, beam_size: int = 4,
                          glossaries: Mapping[str, Mapping[str, str | None]] | None = None) -> TranslateSegments:
    """translate_segments over a Translator: each segment through mtmoe.protected_spans.translate_protected."""
    from mtmoe import protected_spans

    def translate(texts: list[str], target: str) -> list[Any]:
        return protected_spans.translate_protected(translator, texts, target, beam_size=beam_size,
                                                   glossary=(glossaries or {}).get(target))

    return translate


def write_atomic(path: str, data: bytes) -> None:
    """Write `path` through a temporary file in its folder renamed into place: it is whole or untouched.

    (mtmoe.checkpoints.write_atomic would bring orbax in, and leaves its temporary file behind on failure.)
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def localize(source: Source, targets: Sequence[str], out_dir: str, *, translate_segments: TranslateSegments,
             retranslate: bool = False, progress: ProgressCallback | None = None) -> list[Outcome]:
    """Translate `source` into each of `targets` (the model's codes) and write one file per target in `out_dir`.

    Identical segments are translated once per target. Each output is written
    when its target is done. Returns one Outcome per target.
    """
    plans = []
    for target in targets:
        path = os.path.join(out_dir, source.format.output_name(source.name, target))
        previous = None
        if not retranslate and os.path.isfile(path):
            with open(path, "rb") as f:
                previous = f.read().removeprefix(codecs.BOM_UTF8)
        document = source.format.read(source.data, source.name)
        try:
            entries = document.entries(target, retranslate=retranslate, previous=previous)
        except FileError as error:
            raise FileError(f"the earlier output {path} cannot be read ({error}); move it away or pass "
                            f"--retranslate") from None
        texts = list(dict.fromkeys(segment for entry in entries if entry.write for segment in entry.segments))
        plans.append((target, path, document, entries, texts))
    total, done = sum(len(texts) for *_, texts in plans), 0
    outcomes = []
    for target, path, document, entries, texts in plans:
        if progress is not None:
            progress(done, total, target)
        results = {}
        for start in range(0, len(texts), SEGMENTS_PER_CALL):
            chunk = texts[start: start + SEGMENTS_PER_CALL]
            results.update(zip(chunk, translate_segments(chunk, target)))
            done += len(chunk)
            if progress is not None:
                progress(done, total, target)
        outcome = Outcome(target=target, path=path)
        for entry in entries:
            if entry.write is None:
                outcome.skipped += 1
                continue
            problems = entry.write([results[segment] for segment in entry.segments])
            outcome.translated += 1
            outcome.flagged += bool(problems)
        data = document.serialize().replace(b"\r\n", b"\n")
        if source.newline == "\r\n":
            data = data.replace(b"\n", b"\r\n")
        write_atomic(path, source.bom + data)
        outcome.notes = list(document.notes)
        outcomes.append(outcome)
    return outcomes


def _model_languages(model_dir: str) -> list[str]:
    """Target languages of a checkpoint, from its meta (without restoring the parameters)."""
    from mtmoe import checkpoints

    try:
        _, meta = checkpoints.read_json_meta(model_dir)
    except (checkpoints.CheckpointError, FileNotFoundError, ValueError) as error:
        raise FileError(f"--model {model_dir}: {error}") from None
    return sorted({target for _, target in meta.get("language_pairs", [])})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtmoe.localize", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:5]))
    parser.add_argument("input", metavar="IN", help="a .po, .pot, .ftl, .properties, .xlf/.xliff (1.2 or 2.0) or "
                                                    ".txt file")
    parser.add_argument("--to", required=True, metavar="CODES",
                        help="target languages, comma-separated (any spelling: de, pt_BR, zh-CN)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the translated files")
    parser.add_argument("--model", default=RELEASE_MODEL, metavar="DIR",
                        help=f"checkpoint directory (default: the shipped model, "
                             f"{os.path.relpath(RELEASE_MODEL, REPO_ROOT)})")
    parser.add_argument("--beam_size", type=int, default=4, help="beams of the beam search (1 = greedy; default 4)")
    parser.add_argument("--retranslate", action="store_true",
                        help="translate entries that are already translated too")
    parser.add_argument("--glossary", metavar="FILE",
                        help="terms to keep untranslated or translate one way: one a line, term<TAB>translation, "
                             "or a first line term<TAB>de<TAB>fr naming a column per language")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status (2: bad input, said in one line on stderr)."""
    from mtmoe import host_memory

    host_memory.apply_for_command_line()  # before JAX starts its threads: see mtmoe/host_memory.py
    args = build_parser().parse_args(argv)
    try:
        if args.beam_size < 1:
            raise FileError(f"--beam_size {args.beam_size}: give 1 or more")
        source = read_source(args.input)
        if not os.path.isdir(args.model):
            raise FileError(f"--model {args.model}: no such directory; give a model directory written by mtmoe.train")
        targets = resolve_targets(args.to, _model_languages(args.model))
        glossaries = read_glossary(args.glossary, targets) if args.glossary else None
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise FileError(f"--out {args.out} is a file; give a folder for the translated files")
    except FileError as error:
        print(f"python -m mtmoe.localize: {error}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from mtmoe.translate import cached_translator

    translator = cached_translator(args.model)
    # disable=None: no bar where stderr is no terminal (a log); the summary lines say it all there.
    with tqdm(total=0, unit=" segments", disable=None, desc=source.name) as bar:
        def progress(done: int, total: int, target: str) -> None:
            bar.total = total
            bar.set_postfix_str(target)
            bar.update(done - bar.n)

        outcomes = localize(source, targets, args.out, retranslate=args.retranslate, progress=progress,
                            translate_segments=protected_translation(translator, beam_size=args.beam_size,
                                                                     glossaries=glossaries))
    for outcome in outcomes:
        print(outcome.summary())
        for note in outcome.notes:
            print(f"  {outcome.target}: {note}")
    return 0


def console_main() -> None:
    """Entry point of the `mtmoe-localize` script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
