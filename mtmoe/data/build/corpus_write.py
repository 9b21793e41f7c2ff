"""Laying out a built corpus: splits, caps, the embedded train budget, stats.

Input: for each language, its cleaned pairs with the sources they came from.
Output directory (written by `write_corpus`):

    train/en-<lang>.tsv.gz   dev/en-<lang>.tsv.gz   test/en-<lang>.tsv.gz
    multiway/test.tsv.gz     stats.json

Files are gzip'd UTF-8 TSV, English then the other language, no header
(the multi-way file has the header `en\\t<lang1>\\t...`). Tabs and newlines never
occur inside a cell (cleaning collapses whitespace).

Dev and test keep one translation per English sentence, at most `eval_cap`
sentences per language, chosen first from the multi-way sentences and then in
hash order; the same choice is made for `--full` and for the embedded subset.
English sentences in the dev/test hash buckets beyond the cap are held out
(used nowhere), never moved to train.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import os

from mtmoe.data import layouts
from mtmoe.data.build import corpus_clean

EVAL_CAP = 500
MULTIWAY_CAP = 500
SOURCE_PRIORITY = {"libreoffice_help": 0, "libreoffice_ui": 1, "firefox": 2}


def tsv_bytes(rows) -> bytes:
    """Rows (tuples of str) -> gzip'd TSV bytes (mtime 0: rebuilds are byte-identical)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9) as f:
        f.write("".join("\t".join(row) + "\n" for row in rows).encode("utf-8"))
    return buffer.getvalue()


def _write(path: str, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(tsv_bytes(rows))


def split_language(pairs: dict[tuple[str, str], set[str]]) -> dict[str, list[tuple[str, str]]]:
    """{(en, xx): sources} -> {"train"|"dev"|"test": [(en, xx)]}, each in hash order.

    Dev and test keep one translation per English sentence (the one from the
    most curated source: help, then UI, then Firefox).
    """
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    best: dict[str, dict[str, tuple]] = {"dev": {}, "test": {}}
    for (english, other), sources in pairs.items():
        split = corpus_clean.split_of(english)
        if split == "train":
            splits["train"].append((english, other))
            continue
        rank = (min(SOURCE_PRIORITY[s] for s in sources), other)
        current = best[split].get(english)
        if current is None or rank < current[0]:
            best[split][english] = (rank, other)
    for split in ("dev", "test"):
        splits[split] = [(english, other) for english, (_, other) in best[split].items()]
    for split in splits:
        splits[split].sort(key=lambda pair: corpus_clean.order_key(*pair))
    return splits


def choose_multiway(help_tests: dict[str, dict[str, str]], *, cap: int = MULTIWAY_CAP):
    """Test-bucket English sentences of the help pages that the most languages
    share. help_tests: {lang: {english: translation}}. Returns (languages, rows)."""
    languages = sorted(help_tests)
    coverage = collections.Counter(english for lang in languages for english in help_tests[lang])
    chosen = sorted(coverage, key=lambda e: (-coverage[e], corpus_clean.order_key(e)))[:cap]
    rows = [(english, *(help_tests[lang].get(english, "") for lang in languages)) for english in chosen]
    return languages, rows


def cap_eval(split_pairs: list[tuple[str, str]], *, preferred: set[str], cap: int = EVAL_CAP):
    """At most `cap` pairs, the multi-way sentences first."""
    first = [pair for pair in split_pairs if pair[0] in preferred]
    rest = [pair for pair in split_pairs if pair[0] not in preferred]
    return (first + rest)[:cap]


def compressed_bytes_per_pair(pairs: list[tuple[str, str]], *, sample: int = 2000) -> float:
    """Measured gzip size per pair on a prefix of `pairs` (0 for no pairs)."""
    head = pairs[:sample]
    return len(tsv_bytes(head)) / len(head) if head else 0.0


def train_cap_for_budget(train_sizes: dict[str, int], bytes_per_pair: dict[str, float], *, budget_bytes: float) -> int:
    """The largest per-language cap C such that sum over languages of
    min(n, C) * bytes_per_pair stays within the budget (bisection)."""
    def total(cap):
        return sum(min(n, cap) * bytes_per_pair[lang] for lang, n in train_sizes.items())

    low, high = 0, max(train_sizes.values(), default=0)
    while low < high:
        middle = (low + high + 1) // 2
        if total(middle) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def write_corpus(out_dir: str, *, corpus: dict[str, dict[tuple[str, str], set[str]]],
                 full: bool, train_budget_mb: float, packages: dict[str, str], log=print) -> dict:
    """Writes the corpus files and stats.json into `out_dir` (which must be new
    and empty: the caller moves it into place). Returns the stats dict."""
    splits = {lang: split_language(pairs) for lang, pairs in sorted(corpus.items())}
    help_tests = {}
    for lang, pairs in corpus.items():
        by_english = {}
        for english, other in splits[lang]["test"]:
            if "libreoffice_help" in pairs[(english, other)]:
                by_english[english] = other
        if by_english:
            help_tests[lang] = by_english
    multiway_langs, multiway_rows = choose_multiway(help_tests)
    multiway_english = {row[0] for row in multiway_rows}

    train_sizes = {lang: len(s["train"]) for lang, s in splits.items()}
    if full:
        train_cap = max(train_sizes.values(), default=0)
    else:
        per_pair = {lang: compressed_bytes_per_pair(s["train"]) for lang, s in splits.items()}
        train_cap = train_cap_for_budget(train_sizes, per_pair, budget_bytes=train_budget_mb * 1e6)
    log(f"train pairs per language: at most {train_cap}" + (" (--full: all)" if full else f" (budget {train_budget_mb} MB)"))

    stats_languages = {}
    for lang, lang_splits in splits.items():
        rows = {
            "train": lang_splits["train"][:train_cap],
            "dev": cap_eval(lang_splits["dev"], preferred=multiway_english),
            "test": cap_eval(lang_splits["test"], preferred=multiway_english),
        }
        for split, split_rows in rows.items():
            _write(layouts.embedded_file(out_dir, split, lang), split_rows)
        source_counts = collections.Counter(source for sources in corpus[lang].values() for source in sources)
        stats_languages[lang] = {
            "train": len(rows["train"]), "dev": len(rows["dev"]), "test": len(rows["test"]),
            "full_train": train_sizes[lang],
            "sources": {source: source_counts[source] for source in sorted(source_counts)},
        }
    _write(layouts.multiway_file(out_dir), [("en", *multiway_langs), *multiway_rows])

    stats = {
        "languages": stats_languages,
        "multiway": {"languages": multiway_langs, "sentences": len(multiway_rows)},
        "totals": {split: sum(v[split] for v in stats_languages.values()) for split in ("train", "dev", "test", "full_train")},
        "full": full,
        "train_cap_per_language": train_cap,
        "split": {"method": "sha256 of the normalised English side, buckets of 10000",
                  "test_buckets": corpus_clean.TEST_BUCKETS, "dev_buckets": corpus_clean.DEV_BUCKETS,
                  "eval_cap": EVAL_CAP},
        "packages": dict(sorted(packages.items())),
    }
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False, sort_keys=False)
        f.write("\n")
    return stats


README_TABLE_START = "<!-- counts table: written by python -m mtmoe.data.build.build_corpus -->"
README_TABLE_END = "<!-- end of counts table -->"


def counts_table(stats: dict) -> str:
    """The per-language counts of a stats dict as a Markdown table."""
    lines = ["| language | train | dev | test | full train | help | UI | Firefox |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lang, row in stats["languages"].items():
        sources = row["sources"]
        lines.append(f"| {lang} | {row['train']} | {row['dev']} | {row['test']} | {row['full_train']} | "
                     f"{sources.get('libreoffice_help', 0)} | {sources.get('libreoffice_ui', 0)} | "
                     f"{sources.get('firefox', 0)} |")
    totals = stats["totals"]
    lines.append(f"| **all {len(stats['languages'])}** | {totals['train']} | {totals['dev']} | {totals['test']} | "
                 f"{totals['full_train']} | | | |")
    return "\n".join(lines)


def update_readme_table(readme_path: str, stats: dict) -> bool:
    """Replaces the counts table between the markers of `readme_path`; returns
    False (and changes nothing) when the file or its markers are missing."""
    if not os.path.exists(readme_path):
        return False
    with open(readme_path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.find(README_TABLE_START), text.find(README_TABLE_END)
    if start < 0 or end < start:
        return False
    text = text[:start + len(README_TABLE_START)] + "\n" + counts_table(stats) + "\n" + text[end:]
    with open(readme_path, "w", encoding="utf-8") as f:
        f.write(text)
    return True
