"""Test sets for the harness: `embedded`, `flores200:DIR`, `opus100:DIR`, `tsv:FILE`.

Each `--data` value opens one `Source`, which offers the pairs it holds for the
languages a model knows (`default_pairs`) and loads one direction's sentences
(`load`). Layouts read:

- `embedded`: `data/embedded/<split>/en-<lang>.tsv.gz`, two columns
  `English<TAB>other`, no header; both directions come from one file. Pairs
  without English come from the multi-way test set
  `data/embedded/multiway/test.tsv.gz` (header `en<TAB><lang1>...`).
- `flores200:DIR`: the FLORES-200 release, `DIR/devtest/deu_Latn.devtest` and
  `DIR/dev/deu_Latn.dev` (DIR may also be the folder holding
  `flores200_dataset/`); `--split test` reads `devtest`. Model codes map to
  FLORES codes through `tasks.languages` (`de` -> `deu_Latn`); a FLORES code
  may also be given as is.
- `opus100:DIR`: OPUS-100 v1.0, `DIR/supervised/de-en/opus.de-en-test.de`
  (DIR may be `opus-100-corpus`, its `v1.0` or the `supervised` folder).
  Model codes map to OPUS codes through `tasks.languages` (`zh-Hans` -> `zh`);
  a code with a script or region falls back to its bare language.
- `tsv:FILE`: a header line naming the columns `src_lang`, `tgt_lang`, `src`,
  `tgt` (any order, more columns allowed), then one sentence pair a line;
  `.gz` files are read too.

Problems with the data are one-line `DataError`s naming the file and line and
what to fix; `Source.problems` collects the ones found while opening a source
(a TSV line without a tab) so that the other pairs can still be scored.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import gzip
from collections.abc import Collection, Iterator
from pathlib import Path

from eval import languages as language_table

ENGLISH = "en"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EMBEDDED_DIR = REPO_ROOT / "data" / "embedded"
SPLITS = ("test", "dev")
TSV_COLUMNS = ("src_lang", "tgt_lang", "src", "tgt")


class DataError(ValueError):
    """A test set that cannot be read or used; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class TestSet:
    """One direction's test sentences: `sources[i]` translates to `references[i]`."""

    __test__ = False  # not a pytest class

    src_lang: str
    tgt_lang: str
    sources: tuple[str, ...]
    references: tuple[str, ...]

    @property
    def pair(self) -> str:
        return f"{self.src_lang}-{self.tgt_lang}"

    def __len__(self) -> int:
        return len(self.sources)


def _open_text(path: Path):
    # newline="\n": a stray \r inside a sentence must not split it into two lines.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "rt", encoding="utf-8", newline="\n")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its newline); a decoding error is a DataError."""
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\n")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 ({error.reason} at byte {error.start}); re-encode it as UTF-8") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read it ({error}); check the file") from None


def _make_test_set(src: str, tgt: str, sources: list[str], references: list[str], where: str) -> TestSet:
    if not sources:
        raise DataError(f"{where}: the {src}-{tgt} test set is empty; add sentences or leave the pair out")
    return TestSet(src, tgt, tuple(sources), tuple(references))


def _english_pairs(others: Collection[str]) -> list[tuple[str, str]]:
    pairs = []
    for lang in sorted(set(others) - {ENGLISH}):
        pairs += [(ENGLISH, lang), (lang, ENGLISH)]
    return pairs


class Source(abc.ABC):
    """A collection of test sets named by `--data`."""

    name: str  # short, for the default output folder: "embedded", "flores200", ...
    spec: str  # the --data value
    split: str

    def __init__(self):
        self.problems: list[str] = []

    @abc.abstractmethod
    def default_pairs(self, languages: Collection[str]) -> list[tuple[str, str]]:
        """The directions `--pairs all` means: those the data holds between `languages`."""

    @abc.abstractmethod
    def load(self, src: str, tgt: str) -> TestSet:
        """One direction's test set; DataError when the data lacks it or it is malformed."""


class EmbeddedSource(Source):
    """The corpus that ships in data/embedded (see the module docstring)."""

    name = "embedded"

    def __init__(self, directory: Path, *, split: str, spec: str = "embedded"):
        super().__init__()
        self.directory, self.split, self.spec = Path(directory), split, spec
        self.split_dir = self.directory / split
        if not self.split_dir.is_dir():
            raise DataError(f"{self.split_dir} is missing: build the embedded corpus with "
                            "`python -m tasks.build_corpus` or pass --data flores200:DIR, opus100:DIR or tsv:FILE")
        self.files = {}
        for path in sorted(self.split_dir.glob("en-*.tsv*")):
            if path.name.endswith((".tsv", ".tsv.gz")):
                self.files[path.name.split(".tsv")[0][len("en-"):]] = path
        if not self.files:
            raise DataError(f"{self.split_dir} holds no en-<lang>.tsv.gz files: rebuild the embedded corpus "
                            "with `python -m tasks.build_corpus`")

    def default_pairs(self, languages):
        return _english_pairs(set(languages) & set(self.files))

    def load(self, src, tgt):
        if ENGLISH not in (src, tgt):
            return self._load_multiway(src, tgt)
        other = tgt if src == ENGLISH else src
        if other == ENGLISH or other not in self.files:
            raise DataError(f"the embedded {self.split} split has no {src}-{tgt} data "
                            f"(no {self.split_dir}/en-{other}.tsv.gz); leave the pair out")
        path = self.files[other]
        english, foreign = [], []
        for number, line in _lines(path):
            fields = line.split("\t")
            if len(fields) != 2:
                found = "no tab" if len(fields) == 1 else f"{len(fields)} columns"
                raise DataError(f"{path} line {number}: {found}; each line must be English<TAB>{other}")
            english.append(fields[0])
            foreign.append(fields[1])
        sources, references = (english, foreign) if src == ENGLISH else (foreign, english)
        return _make_test_set(src, tgt, sources, references, str(path))

    def _load_multiway(self, src, tgt):
        path = self.directory / "multiway" / "test.tsv.gz"
        if self.split != "test" or not path.is_file():
            raise DataError(f"no embedded {self.split} data for {src}-{tgt}: pairs without English come from "
                            f"the multi-way test set ({path}), test split only")
        lines = _lines(path)
        header = next(lines, (1, ""))[1].split("\t")
        missing = [lang for lang in (src, tgt) if lang not in header]
        if missing:
            raise DataError(f"{path}: the multi-way test set has no column {missing[0]!r}; leave {src}-{tgt} out")
        src_col, tgt_col = header.index(src), header.index(tgt)
        sources, references = [], []
        for number, line in lines:
            fields = line.split("\t")
            if len(fields) != len(header):
                raise DataError(f"{path} line {number}: {len(fields)} columns, the header has {len(header)}; "
                                "fix the line")
            if fields[src_col] and fields[tgt_col]:
                sources.append(fields[src_col])
                references.append(fields[tgt_col])
        return _make_test_set(src, tgt, sources, references, str(path))


class Flores200Source(Source):
    """FLORES-200 `dev` / `devtest` files (see the module docstring)."""

    name = "flores200"
    _SPLIT_DIRS = {"test": "devtest", "dev": "dev"}

    def __init__(self, directory: Path, *, split: str, spec: str):
        super().__init__()
        self.split, self.spec = split, spec
        split_dir = self._SPLIT_DIRS[split]
        for candidate in (Path(directory), Path(directory) / "flores200_dataset"):
            if (candidate / split_dir).is_dir():
                self.split_dir = candidate / split_dir
                break
        else:
            raise DataError(f"{directory} is no FLORES-200 folder: it needs {split_dir}/eng_Latn.{split_dir} "
                            "(unpack flores200_dataset.tar.gz and pass its folder)")
        self.files = {}
        for path in self.split_dir.iterdir():
            # FLORES-200 names files deu_Latn.devtest; some copies name them devtest.deu_Latn.
            stem, _, suffix = path.name.partition(".")
            code = stem if suffix == split_dir else suffix if stem == split_dir else None
            if code:
                self.files[code] = path
        if "eng_Latn" not in self.files:
            raise DataError(f"{self.split_dir} has no eng_Latn.{split_dir}: pass the FLORES-200 folder")

    def _file(self, lang: str) -> Path | None:
        code = "eng_Latn" if lang == ENGLISH else language_table.flores200_code(lang) or lang
        return self.files.get(code)

    def default_pairs(self, languages):
        return _english_pairs([lang for lang in languages if self._file(lang) is not None])

    def load(self, src, tgt):
        paths = [self._file(lang) for lang in (src, tgt)]
        for lang, path in zip((src, tgt), paths):
            if path is None:
                raise DataError(f"{self.split_dir} has no file for {lang!r} (FLORES code "
                                f"{language_table.flores200_code(lang) or 'unknown'}); leave {src}-{tgt} out")
        sources, references = ([line for _, line in _lines(path)] for path in paths)
        if len(sources) != len(references):
            raise DataError(f"{paths[0]} has {len(sources)} lines but {paths[1]} has {len(references)}: "
                            "FLORES files must be line-aligned; re-extract them")
        return _make_test_set(src, tgt, sources, references, str(self.split_dir))


class Opus100Source(Source):
    """OPUS-100 v1.0 supervised pairs (see the module docstring)."""

    name = "opus100"

    def __init__(self, directory: Path, *, split: str, spec: str):
        super().__init__()
        self.split, self.spec = split, spec
        directory = Path(directory)
        for candidate in (directory, directory / "supervised", directory / "v1.0" / "supervised"):
            if candidate.is_dir() and any(candidate.glob(f"*-*/opus.*-{split}.*")):
                self.supervised = candidate
                break
        else:
            raise DataError(f"{directory} is no OPUS-100 folder: it needs supervised/<xx>-en/opus.<xx>-en-{split}.<xx> "
                            "(pass the unpacked opus-100-corpus folder)")
        self.pair_dirs = {}
        for pair_dir in self.supervised.iterdir():
            langs = pair_dir.name.split("-")
            if pair_dir.is_dir() and len(langs) == 2 and ENGLISH in langs:
                self.pair_dirs[langs[0] if langs[1] == ENGLISH else langs[1]] = pair_dir

    def _code(self, lang: str) -> str | None:
        """The OPUS code for a model code: from tasks.languages, itself, or its bare language (`zh-Hans` -> `zh`)."""
        for code in (language_table.opus100_code(lang), lang, lang.split("-")[0]):
            if code in self.pair_dirs:
                return code
        return None

    def default_pairs(self, languages):
        return _english_pairs([lang for lang in languages if self._code(lang) is not None])

    def load(self, src, tgt):
        if ENGLISH not in (src, tgt) or src == tgt:
            raise DataError(f"OPUS-100 has no {src}-{tgt} data: its supervised pairs all have English on one side")
        other = tgt if src == ENGLISH else src
        code = self._code(other)
        if code is None:
            raise DataError(f"{self.supervised} has no {other}-en folder; leave {src}-{tgt} out")
        pair_dir = self.pair_dirs[code]
        name = pair_dir.name
        paths = {lang: pair_dir / f"opus.{name}-{self.split}.{lang}" for lang in (code, ENGLISH)}
        for path in paths.values():
            if not path.is_file():
                raise DataError(f"{path} is missing; re-extract OPUS-100")
        lines = {lang: [line for _, line in _lines(path)] for lang, path in paths.items()}
        if len(lines[code]) != len(lines[ENGLISH]):
            raise DataError(f"{paths[code]} has {len(lines[code])} lines but {paths[ENGLISH]} has "
                            f"{len(lines[ENGLISH])}: OPUS files must be line-aligned; re-extract them")
        src_code = ENGLISH if src == ENGLISH else code
        tgt_code = ENGLISH if tgt == ENGLISH else code
        return _make_test_set(src, tgt, lines[src_code], lines[tgt_code], str(pair_dir))


class TsvSource(Source):
    """One TSV file with a header `src_lang  tgt_lang  src  tgt` (see the module docstring)."""

    name = "tsv"

    def __init__(self, path: Path, *, split: str, spec: str):
        super().__init__()
        self.path, self.split, self.spec = Path(path), split, spec
        self.name = f"tsv-{self.path.name.split('.')[0]}"
        if not self.path.is_file():
            raise DataError(f"{self.path} is not a file: pass --data tsv:FILE with a TSV file")
        lines = _lines(self.path)
        header = next(lines, (1, ""))[1].split("\t")
        missing = [column for column in TSV_COLUMNS if column not in header]
        if missing:
            raise DataError(f"{self.path} line 1: the header lacks column {missing[0]!r}; it must name "
                            f"{', '.join(TSV_COLUMNS)} separated by tabs")
        columns = [header.index(column) for column in TSV_COLUMNS]
        self.rows: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
        self.broken: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        for number, line in lines:
            fields = line.split("\t")
            if len(fields) == len(header):
                src_lang, tgt_lang, src, tgt = (fields[i] for i in columns)
                self.rows[(src_lang, tgt_lang)].append((src, tgt))
            elif len(fields) == 1:
                self.problems.append(f"{self.path} line {number}: no tab, skipped; each line needs "
                                     f"{len(header)} tab-separated columns ({', '.join(header)})")
            else:
                # The pair is still known: it must not be scored on a silently shortened set.
                pair = (fields[columns[0]], fields[columns[1]]) if max(columns[:2]) < len(fields) else None
                where = f"pair {pair[0]}-{pair[1]} left out" if pair else "skipped"
                self.problems.append(f"{self.path} line {number}: {len(fields)} columns, the header has "
                                     f"{len(header)}; {where}; fix the line")
                if pair:
                    self.broken[pair].append(number)

    def default_pairs(self, languages):
        known = set(languages) | {ENGLISH}
        return sorted(pair for pair in set(self.rows) | set(self.broken) if set(pair) <= known)

    def load(self, src, tgt):
        if (src, tgt) in self.broken:
            numbers = ", ".join(map(str, self.broken[(src, tgt)]))
            raise DataError(f"{self.path}: {src}-{tgt} has malformed lines ({numbers}); fix them to score the pair")
        rows = self.rows.get((src, tgt), [])
        return _make_test_set(src, tgt, [s for s, _ in rows], [t for _, t in rows], str(self.path))


def open_source(spec: str, *, split: str = "test", embedded_dir: Path = DEFAULT_EMBEDDED_DIR) -> Source:
    """The `Source` a `--data` value names; DataError for an unknown kind or a missing folder."""
    if split not in SPLITS:
        raise DataError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    kind, _, location = spec.partition(":")
    if kind == "embedded":
        return EmbeddedSource(Path(location) if location else embedded_dir, split=split, spec=spec)
    readers = {"flores200": Flores200Source, "opus100": Opus100Source, "tsv": TsvSource}
    if kind not in readers:
        raise DataError(f"--data {spec!r}: use embedded, flores200:DIR, opus100:DIR or tsv:FILE")
    if not location:
        raise DataError(f"--data {spec!r}: give the location, e.g. {kind}:/path/to/{kind}")
    return readers[kind](Path(location).expanduser(), split=split, spec=spec)
