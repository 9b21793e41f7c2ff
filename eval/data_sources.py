"""Test sets for the harness: `embedded`, `flores200:DIR`, `opus100:DIR`, `tsv:FILE`.

Each `--data` value opens one `Source`, which offers the pairs it holds for the
languages a model knows (`default_pairs`) and loads one direction's sentences
(`load`). The folder layouts, split names and line reader are `mtmoe.data`'s
(`layouts`, `readers`), the ones the seqio tasks train on:

- `embedded`: data/embedded (or $MTMOE_EMBEDDED_DIR); both directions come from
  one `en-<lang>` file, pairs without English from the multi-way test set.
- `flores200:DIR`: the FLORES-200 release (DIR holds `flores200_dataset/` or is
  it); `--split test` reads `devtest`. Model codes map to FLORES codes through
  `mtmoe.data.languages` (`de` -> `deu_Latn`); a FLORES code may also be given as is.
- `opus100:DIR`: OPUS-100 v1.0 (DIR may be `opus-100-corpus`, its `v1.0` or the
  `supervised` folder). Model codes map to OPUS codes through
  `mtmoe.data.languages` (`zh-Hans` -> `zh`); a code with a script or region
  falls back to its bare language.
- `tsv:FILE`: a header line naming the columns `src_lang`, `tgt_lang`, `src`,
  `tgt` (any order, more columns allowed), then one sentence pair a line;
  `.gz` files are read too. Its codes may be any spelling of the model's
  (`zh`, `ZH`, `zh_CN` -> `zh-Hans`; `pt` -> `pt-BR` where the model has no
  `pt`): `match_languages` ties them to the model's, and the rows of a code
  that matches none are counted and named in one line, not scored.

Test sets are read strictly, never shortened in silence: problems with the data
are one-line `DataError`s naming the file and line and what to fix;
`Source.problems` collects the ones found while opening a source (a TSV line
without a tab) so that the other pairs can still be scored.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path

from mtmoe.data import languages as language_table
from mtmoe.data import layouts
from mtmoe.data.readers import DataError, aligned_lines, numbered_lines

ENGLISH = layouts.ENGLISH
REPO_ROOT = layouts.REPO_ROOT
DEFAULT_EMBEDDED_DIR = layouts.EMBEDDED_DIR
SPLITS = ("test", "dev")  # --split values, as the embedded and OPUS-100 files name them
TSV_COLUMNS = ("src_lang", "tgt_lang", "src", "tgt")


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

    def match_languages(self, languages: Collection[str]) -> list[str]:
        """Ties the data's language codes to `languages` (a model's): afterwards `default_pairs`
        and `load` speak the model's codes. Returns one line per code that matches none.

        The corpora named by folder use the project's codes already (FLORES-200 and
        OPUS-100 map them through the language table), so only a TSV has work to do.
        """
        return []


class EmbeddedSource(Source):
    """The corpus that ships in data/embedded (see the module docstring)."""

    name = "embedded"

    def __init__(self, directory: Path, *, split: str, spec: str = "embedded"):
        super().__init__()
        self.directory, self.split, self.spec = Path(directory), split, spec
        self.split_dir = layouts.embedded_split_dir(self.directory, split)
        try:
            self.files = layouts.embedded_files(self.directory, split)
        except FileNotFoundError as error:
            raise DataError(f"{error}, or pass --data flores200:DIR, opus100:DIR or tsv:FILE") from None

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
        for number, line in numbered_lines(path):
            fields = line.split("\t")
            if len(fields) != 2:
                found = "no tab" if len(fields) == 1 else f"{len(fields)} columns"
                raise DataError(f"{path} line {number}: {found}; each line must be English<TAB>{other}")
            english.append(fields[0])
            foreign.append(fields[1])
        sources, references = (english, foreign) if src == ENGLISH else (foreign, english)
        return _make_test_set(src, tgt, sources, references, str(path))

    def _load_multiway(self, src, tgt):
        path = layouts.multiway_file(self.directory)
        if layouts.split_name(self.split) != layouts.MULTIWAY_SPLIT or not path.is_file():
            raise DataError(f"no embedded {self.split} data for {src}-{tgt}: pairs without English come from "
                            f"the multi-way test set ({path}), test split only")
        lines = numbered_lines(path)
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

    def __init__(self, directory: Path, *, split: str, spec: str):
        super().__init__()
        self.split, self.spec = split, spec
        try:
            self.split_dir = layouts.flores200_split_dir(directory, split)
        except FileNotFoundError as error:
            raise DataError(f"{error}; pass its folder") from None
        self.files = layouts.flores200_files(self.split_dir)
        if layouts.FLORES200_ENGLISH not in self.files:
            raise DataError(f"{self.split_dir} has no {layouts.FLORES200_ENGLISH}.{self.split_dir.name}: "
                            "pass the FLORES-200 folder")

    def _file(self, lang: str) -> Path | None:
        code = layouts.FLORES200_ENGLISH if lang == ENGLISH else _flores200_code(lang) or lang
        return self.files.get(code)

    def default_pairs(self, languages):
        return _english_pairs([lang for lang in languages if self._file(lang) is not None])

    def load(self, src, tgt):
        paths = [self._file(lang) for lang in (src, tgt)]
        for lang, path in zip((src, tgt), paths):
            if path is None:
                raise DataError(f"{self.split_dir} has no file for {lang!r} (FLORES code "
                                f"{_flores200_code(lang) or 'unknown'}); leave {src}-{tgt} out")
        sources, references = aligned_lines(paths)
        return _make_test_set(src, tgt, sources, references, str(self.split_dir))


class Opus100Source(Source):
    """OPUS-100 v1.0 supervised pairs (see the module docstring)."""

    name = "opus100"

    def __init__(self, directory: Path, *, split: str, spec: str):
        super().__init__()
        self.split, self.spec = split, spec
        try:
            self.supervised = layouts.opus100_supervised_dir(directory)
        except FileNotFoundError as error:
            raise DataError(f"{error}; pass the unpacked opus-100-corpus folder") from None
        self.pair_dirs = layouts.opus100_pair_dirs(self.supervised)

    def _code(self, lang: str) -> str | None:
        """The OPUS code for a model code: from the language table, itself, or its bare language (`zh-Hans` -> `zh`)."""
        known = language_table.find_language(lang)
        for code in (known and known.opus100, lang, lang.split("-")[0]):
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
        english_file, other_file = layouts.opus100_files(self.supervised, code, self.split)
        lines = dict(zip((ENGLISH, code), aligned_lines([english_file, other_file])))
        src_code = ENGLISH if src == ENGLISH else code
        tgt_code = ENGLISH if tgt == ENGLISH else code
        return _make_test_set(src, tgt, lines[src_code], lines[tgt_code], str(english_file.parent))


class TsvSource(Source):
    """One TSV file with a header `src_lang  tgt_lang  src  tgt` (see the module docstring)."""

    name = "tsv"

    def __init__(self, path: Path, *, split: str, spec: str):
        super().__init__()
        self.path, self.split, self.spec = Path(path), split, spec
        self.name = f"tsv-{self.path.name.split('.')[0]}"
        if not self.path.is_file():
            raise DataError(f"{self.path} is not a file: pass --data tsv:FILE with a TSV file")
        lines = numbered_lines(self.path)
        header = next(lines, (1, ""))[1].split("\t")
        missing = [column for column in TSV_COLUMNS if column not in header]
        if missing:
            raise DataError(f"{self.path} line 1: the header lacks column {missing[0]!r}; it must name "
                            f"{', '.join(TSV_COLUMNS)} separated by tabs")
        columns = [header.index(column) for column in TSV_COLUMNS]
        self._lines: list[tuple[str, str, str, str]] = []  # (src_lang, tgt_lang, src, tgt) as written, in file order
        self._broken_lines: list[tuple[int, str, str]] = []  # (line number, src_lang, tgt_lang)
        for number, line in lines:
            fields = line.split("\t")
            if len(fields) == len(header):
                self._lines.append(tuple(fields[i] for i in columns))
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
                    self._broken_lines.append((number, *pair))
        self._group({})

    def _group(self, codes: Mapping[str, str]) -> None:
        """`rows` and `broken` by (src, tgt), each code as `codes` maps it (else as written), rows in file order."""
        self.rows: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
        self.broken: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        for src_lang, tgt_lang, src, tgt in self._lines:
            self.rows[(codes.get(src_lang, src_lang), codes.get(tgt_lang, tgt_lang))].append((src, tgt))
        for number, src_lang, tgt_lang in self._broken_lines:
            self.broken[(codes.get(src_lang, src_lang), codes.get(tgt_lang, tgt_lang))].append(number)

    def match_languages(self, languages):
        known = set(languages) | {ENGLISH}
        written = sorted({lang for line in self._lines for lang in line[:2]}
                         | {lang for line in self._broken_lines for lang in line[1:]})
        codes, problems = {}, []
        for lang in written:
            try:
                codes[lang] = language_table.match_language(lang, known)
            except ValueError as error:
                count = sum(lang in line[:2] for line in self._lines)
                if count:  # a code met only on malformed lines: those are reported already
                    problems.append(f"{self.path}: {count} row{'s' if count != 1 else ''} not scored: {error}")
        self._lines = [line for line in self._lines if line[0] in codes and line[1] in codes]
        self._broken_lines = [line for line in self._broken_lines if line[1] in codes and line[2] in codes]
        self._group(codes)
        return problems

    def default_pairs(self, languages):
        known = set(languages) | {ENGLISH}
        return sorted(pair for pair in set(self.rows) | set(self.broken) if set(pair) <= known)

    def load(self, src, tgt):
        if (src, tgt) in self.broken:
            numbers = ", ".join(map(str, self.broken[(src, tgt)]))
            raise DataError(f"{self.path}: {src}-{tgt} has malformed lines ({numbers}); fix them to score the pair")
        rows = self.rows.get((src, tgt), [])
        return _make_test_set(src, tgt, [s for s, _ in rows], [t for _, t in rows], str(self.path))


def _flores200_code(lang: str) -> str | None:
    known = language_table.find_language(lang)
    return known.flores if known else None


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
