"""Builds the embedded English<->X corpus from Debian's localisation packages.

    python -m mtmoe.data.build.build_corpus                       # data/embedded (compact subset, ~20 MB)
    python -m mtmoe.data.build.build_corpus --full --out /big/dir # every pair, outside the repository
    python -m mtmoe.data.build.build_corpus --languages de pt-BR --out /tmp/two   # a few languages

Steps: list the packages apt knows (`corpus_packages`), download them into the
cache (`apt-get download`, no root), unpack each with `dpkg -x`, read its
strings (`corpus_help`, `corpus_gettext`, `corpus_firefox`), clean and dedupe
per language (`corpus_clean`), split by a hash of the English side and write
the files and stats.json (`corpus_write`).

The corpus is written to a temporary directory beside `--out` and moved into
place only when complete, so a failed build never replaces a good corpus.
A missing apt, a package apt cannot fetch, or a language that yields no pairs
is reported in one line and the build goes on with the rest. Parsed packages
are cached next to the downloads (`<cache>/parsed/`), so a rebuild takes
seconds once the .deb files are there.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

from tqdm import tqdm

from mtmoe.data import layouts
from mtmoe.data.build import corpus_clean, corpus_firefox, corpus_gettext, corpus_help, corpus_packages, corpus_write

DEFAULT_OUT = os.fspath(layouts.DEFAULT_EMBEDDED_DIR)
DEFAULT_README = os.path.join(os.path.dirname(DEFAULT_OUT), "README.md")
DEFAULT_TRAIN_BUDGET_MB = 19.0   # gzip'd train files; with dev/test and the vocabulary data/ stays under ~25 MB
# Bump a parser's version when it changes: it invalidates that parser's entries in <cache>/parsed/.
PARSER_VERSIONS = {"_parse_help": 2, "_parse_ui": 2, "_parse_firefox_english": 3, "_parse_langpack": 3}


def _cached_parse(deb_path: str, *, cache_dir: str, parse):
    """parse(unpacked_dir) for one .deb, cached as JSON under <cache>/parsed/."""
    parsed_dir = os.path.join(cache_dir, "parsed")
    version = PARSER_VERSIONS[parse.__name__]
    cache_file = os.path.join(parsed_dir, f"v{version}-{os.path.basename(deb_path)}.json.gz")
    if os.path.exists(cache_file):
        with gzip.open(cache_file, "rt", encoding="utf-8") as f:
            return json.load(f)
    with tempfile.TemporaryDirectory(prefix="mtmoe-deb-") as unpacked:
        corpus_packages.unpack(deb_path, into=unpacked)
        result = parse(unpacked)
    os.makedirs(parsed_dir, exist_ok=True)
    with gzip.open(cache_file + ".tmp", "wt", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
    os.replace(cache_file + ".tmp", cache_file)
    return result


def _parse_help(unpacked: str) -> dict[str, str]:
    root = corpus_help.help_root(unpacked)
    return corpus_help.read_help_tree(root) if root else {}


def _parse_ui(unpacked: str) -> list[list[str]]:
    return [list(pair) for pair in corpus_gettext.read_ui_pairs(unpacked)]


def _parse_firefox_english(unpacked: str) -> dict[str, str]:
    files, terms = {}, {}
    for root, _, names in os.walk(unpacked):
        for name in names:
            if name == "omni.ja":
                more_files, more_terms = corpus_firefox.read_archive(os.path.join(root, name), locale="en-US")
                files.update(more_files)
                terms.update(more_terms)
    return corpus_firefox.resolved_strings(files, terms)


def _parse_langpack(unpacked: str) -> dict[str, str]:
    strings = {}
    for root, _, names in os.walk(unpacked):
        for name in names:
            if name.endswith(".xpi"):
                path = os.path.join(root, name)
                files, terms = corpus_firefox.read_archive(path, locale=corpus_firefox.langpack_locale(path))
                strings.update(corpus_firefox.resolved_strings(files, terms))
    return strings


def collect_pairs(packages: list[corpus_packages.Package], *, cache_dir: str, log=print):
    """Downloads and parses the packages. Returns (corpus, versions) where corpus
    is {lang: {(en, xx): set of sources}} of cleaned pairs and versions is
    {package name: Debian version} of every package used."""
    english_needed = {corpus_packages.HELP_ENGLISH_PACKAGE: "libreoffice_help",
                      corpus_packages.FIREFOX_ENGLISH_PACKAGE: "firefox"}
    wanted_sources = {package.source for package in packages}
    english_names = [name for name, source in english_needed.items() if source in wanted_sources]
    debs = corpus_packages.download([*english_names, *(p.name for p in packages)], cache_dir=cache_dir, log=log)
    versions = {name: corpus_packages.deb_version(path) for name, path in debs.items()}

    english = {}
    for name, parse in ((corpus_packages.HELP_ENGLISH_PACKAGE, _parse_help),
                        (corpus_packages.FIREFOX_ENGLISH_PACKAGE, _parse_firefox_english)):
        if name in english_names:
            if name in debs:
                english[english_needed[name]] = _cached_parse(debs[name], cache_dir=cache_dir, parse=parse)
            else:
                log(f"{name} is missing: no English originals, so no {english_needed[name]} pairs")

    corpus: dict[str, dict[tuple[str, str], set[str]]] = collections.defaultdict(dict)
    # disable=None: a bar on a terminal; a log gets the per-package lines only.
    for package in tqdm(packages, desc="reading packages", unit="package", disable=None):
        if package.name not in debs or (package.source != "libreoffice_ui" and package.source not in english):
            continue
        start = time.time()
        try:
            if package.source == "libreoffice_help":
                raw_pairs = corpus_help.align_help(english["libreoffice_help"], _cached_parse(
                    debs[package.name], cache_dir=cache_dir, parse=_parse_help))
            elif package.source == "libreoffice_ui":
                raw_pairs = _cached_parse(debs[package.name], cache_dir=cache_dir, parse=_parse_ui)
            else:
                raw_pairs = corpus_firefox.align_firefox(english["firefox"], _cached_parse(
                    debs[package.name], cache_dir=cache_dir, parse=_parse_langpack))
        except Exception as error:  # a broken package must not stop the other 230
            log(f"{package.name}: could not be read ({type(error).__name__}: {error}); skipping it")
            continue
        kept = 0
        pairs = corpus[package.code]
        for english_text, other in raw_pairs:
            cleaned = corpus_clean.clean_pair(english_text, other, source=package.source)
            if cleaned is not None:
                pairs.setdefault(cleaned, set()).add(package.source)
                kept += 1
        if kept == 0:
            log(f"{package.name}: no usable pairs ({len(raw_pairs)} raw); language {package.code} gets nothing from it")
        else:
            log(f"{package.name}: {kept} pairs -> {package.code} ({time.time() - start:.1f}s)")
    return {lang: pairs for lang, pairs in corpus.items() if pairs}, versions


def replace_directory(*, built: str, out_dir: str) -> None:
    """Moves a complete build into place; the old directory is removed only
    after the new one is there."""
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(out_dir))
        os.rename(out_dir, os.path.join(old, "corpus"))
    os.rename(built, out_dir)
    if old:
        shutil.rmtree(old)


def build(*, out_dir: str, full: bool = False, languages: list[str] | None = None,
          cache_dir: str = corpus_packages.DEFAULT_CACHE, train_budget_mb: float = DEFAULT_TRAIN_BUDGET_MB,
          log=print) -> dict | None:
    """Builds the corpus into `out_dir`. Returns its stats, or None (after one
    line saying why) when nothing could be built; `out_dir` is then untouched."""
    out_dir = os.path.abspath(out_dir)
    packages = corpus_packages.list_packages(languages=set(languages) if languages else None,
                                             cache_dir=cache_dir, log=log)
    if languages:
        found = {p.code for p in packages} | {p.locale for p in packages}
        for lang in languages:
            if lang not in found:
                log(f"language {lang}: no localisation package found (codes look like de, pt-BR, zh-Hant); skipping it")
    if not packages:
        log(f"no packages to read: {out_dir} left as it was")
        return None
    corpus, versions = collect_pairs(packages, cache_dir=cache_dir, log=log)
    for lang in sorted({p.code for p in packages} - set(corpus)):
        log(f"language {lang}: no pairs from any package; it is left out")
    if not corpus:
        log(f"no pairs were extracted: {out_dir} left as it was")
        return None
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    built = tempfile.mkdtemp(prefix=".building-", dir=parent)
    try:
        stats = corpus_write.write_corpus(built, corpus=corpus, full=full, train_budget_mb=train_budget_mb,
                                          packages=versions, log=log)
        replace_directory(built=built, out_dir=out_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    if out_dir == DEFAULT_OUT and corpus_write.update_readme_table(DEFAULT_README, stats):
        log(f"updated the counts table in {DEFAULT_README}")
    totals = stats["totals"]
    log(f"wrote {out_dir}: {len(stats['languages'])} languages, train {totals['train']}, "
        f"dev {totals['dev']}, test {totals['test']} pairs (full train {totals['full_train']}), "
        f"multi-way test {stats['multiway']['sentences']} sentences x {len(stats['multiway']['languages'])} languages")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmoe.data.build.build_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="corpus directory to (re)write (default: data/embedded)")
    parser.add_argument("--full", action="store_true", help="write every train pair, not the compact subset")
    parser.add_argument("--languages", nargs="+", help="only these language codes or package locales (de, pt-BR, pt-br)")
    parser.add_argument("--cache", default=corpus_packages.DEFAULT_CACHE, help="where .deb files and parses are kept")
    parser.add_argument("--train-budget-mb", type=float, default=DEFAULT_TRAIN_BUDGET_MB,
                        help="gzip'd size of all train files of the compact subset")
    args = parser.parse_args(argv)
    if args.full and os.path.abspath(args.out) == DEFAULT_OUT:
        parser.error("--full writes about 105 MB: give --out DIR outside the repository")
    from mtmoe.data.build import log_line

    stats = build(out_dir=args.out, full=args.full, languages=args.languages, cache_dir=args.cache,
                  train_budget_mb=args.train_budget_mb, log=log_line)
    return 0 if stats is not None else 1


if __name__ == "__main__":
    sys.exit(main())
