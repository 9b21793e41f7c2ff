"""Split names and where each corpus keeps them: embedded, OPUS-100, FLORES-200.

Splits are named as seqio names them, "train", "validation" and "test"; each
layout maps them to its own file names ("dev" is accepted for "validation"):

- embedded (data/embedded, or $MTMOE_EMBEDDED_DIR): `<root>/{train,dev,test}/en-<lang>.tsv.gz`,
  gzip'd UTF-8, `English<TAB>other`, no header; `<root>/multiway/test.tsv.gz`, the
  multi-way test set with the header `en<TAB><lang1>...`; `<root>/stats.json`,
  pairs per language and split. Written by `python -m mtmoe.data.build.build_corpus`.
- OPUS-100 v1.0: `<root>/opus-100-corpus/v1.0/supervised/<xx>-<yy>/opus.<xx>-<yy>-{train,dev,test}.<lang>`,
  one sentence a line, the two languages line-aligned; `<root>` may be any folder on
  that path, down to `supervised` itself.
- FLORES-200: `<root>/flores200_dataset/{dev,devtest}/<code>.{dev,devtest}` with
  FLORES codes (`deu_Latn`); validation is dev, test is devtest, there is no train.
  `<root>` may be `flores200_dataset` itself; some copies name files `devtest.deu_Latn`.

Functions find files and raise FileNotFoundError saying what is missing and
where to download it; callers add how a user points at another copy (an
environment variable, a gin binding, a `--data` flag).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
DEFAULT_EMBEDDED_DIR = DATA_DIR / "embedded"
EMBEDDED_DIR = Path(os.environ.get("MTMOE_EMBEDDED_DIR", DEFAULT_EMBEDDED_DIR))
BUILD_COMMAND = "python -m mtmoe.data.build.build_corpus"

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"dev": "validation"}
# File names of each split: the embedded corpus and OPUS-100 call validation "dev".
EMBEDDED_SPLIT_DIRS = {"train": "train", "validation": "dev", "test": "test"}
OPUS100_SPLIT_NAMES = EMBEDDED_SPLIT_DIRS
FLORES200_SPLIT_DIRS = {"validation": "dev", "test": "devtest"}
MULTIWAY_SPLIT = "test"  # the only split with a multi-way file

OPUS100_URL = "https://object.pouta.csc.fi/OPUS-100/v1.0/opus-100-corpus-v1.0.tar.gz"
FLORES200_URL = "https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz"
ENGLISH = "en"
FLORES200_ENGLISH = "eng_Latn"


def split_name(split: str) -> str:
    """The seqio name of `split`: "dev" -> "validation"; ValueError for a name no layout has."""
    name = _SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use train, validation (or dev) or test")
    return name


# --- The embedded corpus -------------------------------------------------------------


def missing_embedded_message(path: str | os.PathLike) -> str:
    """What to do when a file of the embedded corpus is missing."""
    return (f"{path} is missing: rebuild the embedded corpus (`{BUILD_COMMAND}`) "
            "or point MTMOE_EMBEDDED_DIR at a built one")


def load_stats(root: str | os.PathLike = EMBEDDED_DIR) -> dict[str, dict]:
    """language -> {"train": n, "dev": n, "test": n, ...} from <root>/stats.json.

    Raises:
      FileNotFoundError: no stats.json (the corpus was not built).
    """
    path = Path(root) / "stats.json"
    if not path.exists():
        raise FileNotFoundError(missing_embedded_message(path))
    return json.loads(path.read_text(encoding="utf-8"))["languages"]


def embedded_split_dir(root: str | os.PathLike, split: str) -> Path:
    """<root>/<train|dev|test> for split "train" / "validation" (or "dev") / "test"."""
    return Path(root) / EMBEDDED_SPLIT_DIRS[split_name(split)]


def embedded_file(root: str | os.PathLike, split: str, lang: str) -> str:
    """<root>/<train|dev|test>/en-<lang>.tsv.gz."""
    return os.fspath(embedded_split_dir(root, split) / f"en-{lang}.tsv.gz")


def embedded_files(root: str | os.PathLike, split: str) -> dict[str, Path]:
    """{lang: path} of the en-<lang>.tsv(.gz) files the split holds (FileNotFoundError if none)."""
    split_dir = embedded_split_dir(root, split)
    files = {}
    if split_dir.is_dir():
        for path in sorted(split_dir.glob("en-*.tsv*")):
            if path.name.endswith((".tsv", ".tsv.gz")):
                files[path.name.split(".tsv")[0][len("en-"):]] = path
    if not files:
        raise FileNotFoundError(missing_embedded_message(f"{split_dir}/en-<lang>.tsv.gz"))
    return files


def multiway_file(root: str | os.PathLike) -> Path:
    """<root>/multiway/test.tsv.gz: the test sentences every language translates."""
    return Path(root) / "multiway" / f"{EMBEDDED_SPLIT_DIRS[MULTIWAY_SPLIT]}.tsv.gz"


# --- OPUS-100 ----------------------------------------------------------------------------


def _english_pair_dirs(folder: Path) -> dict[str, Path]:
    """{other language: folder} of the `<xx>-en` / `en-<xx>` subfolders of `folder`."""
    pairs = {}
    for path in sorted(folder.glob("*-*")):
        langs = path.name.split("-")
        if path.is_dir() and len(langs) == 2 and ENGLISH in langs and langs[0] != langs[1]:
            pairs[langs[0] if langs[1] == ENGLISH else langs[1]] = path
    return pairs


def opus100_supervised_dir(root: str | os.PathLike) -> Path:
    """The `supervised` folder of an OPUS-100 v1.0 copy whose root is `root`."""
    root = Path(root).expanduser()
    for candidate in ("opus-100-corpus/v1.0/supervised", "v1.0/supervised", "supervised", "."):
        path = root / candidate
        if path.is_dir() and _english_pair_dirs(path):
            return path.resolve() if candidate == "." else path
    raise FileNotFoundError(
        f"{root} is no OPUS-100 folder: it does not hold opus-100-corpus/v1.0/supervised/<xx>-en/; "
        f"download {OPUS100_URL} and unpack it there"
    )


def opus100_pair_dirs(supervised: str | os.PathLike) -> dict[str, Path]:
    """{OPUS-100 code: its `<xx>-en` folder} for every language of a `supervised` folder."""
    return _english_pair_dirs(Path(supervised))


def opus100_files(supervised: str | os.PathLike, code: str, split: str) -> tuple[Path, Path]:
    """(English file, <code> file) of one OPUS-100 pair and split (paths not checked)."""
    supervised = Path(supervised)
    for name in (f"{code}-{ENGLISH}", f"{ENGLISH}-{code}"):
        if (supervised / name).is_dir():
            pair_dir = supervised / name
            break
    else:
        pair_dir = supervised / "-".join(sorted([ENGLISH, code]))  # the name OPUS-100 uses
    stem = f"opus.{pair_dir.name}-{OPUS100_SPLIT_NAMES[split_name(split)]}"
    return pair_dir / f"{stem}.{ENGLISH}", pair_dir / f"{stem}.{code}"


# --- FLORES-200 -------------------------------------------------------------------------


def flores200_split_dir(root: str | os.PathLike, split: str) -> Path:
    """The dev / devtest folder of a FLORES-200 copy for split "validation" / "test"."""
    split = split_name(split)
    if split not in FLORES200_SPLIT_DIRS:
        raise ValueError(f"FLORES-200 has no {split} split: it is for evaluation (validation, test) only")
    folder = FLORES200_SPLIT_DIRS[split]
    root = Path(root).expanduser()
    for candidate in (root / "flores200_dataset", root):
        if (candidate / folder).is_dir():
            return candidate / folder
    raise FileNotFoundError(
        f"{root} is no FLORES-200 folder: it has no flores200_dataset/{folder}/ (or {folder}/); "
        f"download {FLORES200_URL} and unpack it there"
    )


def flores200_files(split_dir: str | os.PathLike) -> dict[str, Path]:
    """{FLORES code: file} in a dev / devtest folder (`deu_Latn.devtest` or `devtest.deu_Latn`)."""
    split_dir = Path(split_dir)
    files = {}
    for path in sorted(split_dir.iterdir()):
        stem, _, suffix = path.name.partition(".")
        code = stem if suffix == split_dir.name else suffix if stem == split_dir.name else None
        if code:
            files[code] = path
    return files
