"""Writing the harness's results: results.json, results.csv, results.md, hyps/refs files.

Every file is written to a temporary name beside it and renamed into place,
so an interrupted run never leaves half a results.json behind (the next run
resumes from it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from eval import buckets as bucket_lib

ENGLISH = "en"
CSV_COLUMNS = ("pair", "src", "tgt", "language", "name", "resource_size", "bucket", "bleu", "chrf", "spbleu",
               "n", "seconds", "bleu_signature", "chrf_signature", "spbleu_signature")
BUCKET_TITLES = {"high": "high resource", "low": "low resource", "very_low": "very low resource",
                 "unknown": "unknown resource size"}


def write_text_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """One sentence a line (callers pass lines already made single by `scoring.one_line`)."""
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as handle:
        return [line.rstrip("\n") for line in handle]


def write_json(path: Path, results: Mapping) -> None:
    write_text_atomic(path, json.dumps(results, indent=1, ensure_ascii=False, sort_keys=False) + "\n")


def _language(entry: Mapping) -> str:
    return entry["tgt"] if entry["src"] == ENGLISH else entry["src"]


def csv_text(results: Mapping) -> str:
    """One row per pair, in the order of results["pairs"]."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for pair, entry in results["pairs"].items():
        language = _language(entry)
        info = results.get("languages", {}).get(language, {})
        writer.writerow({"pair": pair, "language": language, "name": info.get("name", language),
                         "resource_size": info.get("resource_size"), "bucket": info.get("bucket", "unknown"),
                         **{key: value for key, value in entry.items() if key in CSV_COLUMNS}})
    return out.getvalue()


def _score(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def sorted_languages(results: Mapping) -> list[str]:
    """English-centric languages, largest training set first, unknown sizes last."""
    langs = {_language(e) for e in results["pairs"].values() if ENGLISH in (e["src"], e["tgt"])}
    info = results.get("languages", {})

    def key(lang):
        size = info.get(lang, {}).get("resource_size")
        return (size is None, -(size or 0), lang)

    return sorted(langs, key=key)


def _average_row(title: str, group: Mapping | None, spbleu: bool) -> str:
    if not group:
        return ""
    cells = [title, str(group["pairs"]), _score(group.get("bleu")), _score(group.get("chrf"))]
    if spbleu:
        cells.append(_score(group.get("spbleu")))
    return "| " + " | ".join(cells) + " |\n"


def table_markdown(results: Mapping) -> str:
    """The per-language table and the averages: what results.md holds and the CLI prints."""
    pairs, info = results["pairs"], results.get("languages", {})
    by_direction = {(e["src"], e["tgt"]): e for e in pairs.values()}
    baseline = results.get("baseline")
    header = ["lang", "language", "train pairs", "bucket", "en→X BLEU", "en→X chrF++", "X→en BLEU", "X→en chrF++",
              "n"]
    if baseline:
        header += ["Δ en→X BLEU (p)", "Δ en→X chrF++ (p)", "Δ X→en BLEU (p)", "Δ X→en chrF++ (p)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for lang in sorted_languages(results):
        into, out_of = by_direction.get((ENGLISH, lang), {}), by_direction.get((lang, ENGLISH), {})
        size = info.get(lang, {}).get("resource_size")
        counts = sorted({e["n"] for e in (into, out_of) if e})
        row = [lang, info.get(lang, {}).get("name", lang), "?" if size is None else f"{size:,}",
               info.get(lang, {}).get("bucket", "unknown").replace("_", " "),
               _score(into.get("bleu")), _score(into.get("chrf")),
               _score(out_of.get("bleu")), _score(out_of.get("chrf")), "/".join(map(str, counts))]
        if baseline:
            row += _compared(baseline, f"{ENGLISH}-{lang}") + _compared(baseline, f"{lang}-{ENGLISH}")
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"

    others = [(pair, e) for pair, e in pairs.items() if ENGLISH not in (e["src"], e["tgt"])]
    if others:
        columns = ["pair", "BLEU", "chrF++", "n"] + (["Δ BLEU (p)", "Δ chrF++ (p)"] if baseline else [])
        text += "\nPairs without English:\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        for pair, e in others:
            row = [pair, _score(e["bleu"]), _score(e["chrf"]), str(e["n"])]
            row += _compared(baseline, pair) if baseline else []
            text += "| " + " | ".join(row) + " |\n"

    averages = results.get("averages", {})
    spbleu = any("spbleu" in e for e in pairs.values())
    text += "\nAverages (mean over pairs):\n\n| group | pairs | BLEU | chrF++ |" + (" spBLEU |" if spbleu else "")
    text += "\n|---|---|---|---|" + ("---|" if spbleu else "") + "\n"
    text += _average_row("English→X", averages.get("en-xx"), spbleu)
    text += _average_row("X→English", averages.get("xx-en"), spbleu)
    text += _average_row("without English", averages.get("xx-yy"), spbleu)
    edges = results.get("bucket_edges")
    for bucket, kinds in averages.get("buckets", {}).items():
        title = BUCKET_TITLES[bucket]
        if edges and bucket != "unknown":
            title += " (" + bucket_lib.BucketEdges(**edges).range_text(bucket) + ")"
        text += _average_row(title + ", both directions", kinds.get("both"), spbleu)
    return text


def _compared(baseline: Mapping, pair: str) -> list[str]:
    """["+1.2 (p 0.013)", "+0.8 (p 0.041)"]: the BLEU and chrF++ deltas of `pair` and their p-values."""
    cells = []
    for metric in ("bleu", "chrf"):
        delta, p_value = baseline[f"delta_{metric}"].get(pair), baseline[f"p_{metric}"].get(pair)
        cells.append("–" if delta is None else f"{delta:+.1f} (p {p_value:.3f})")
    return cells


def markdown(results: Mapping) -> str:
    """results.md: what was scored and how, the table, the averages, signatures and errors."""
    limit = results.get("max_sentences")
    edges = bucket_lib.BucketEdges(**results["bucket_edges"])
    text = f"# Per-language BLEU: {results['checkpoint'] or 'a given translator'} (step {results['step']})\n\n"
    text += (f"- Data: `{results['data']}`, {results['split']} split, "
             f"{'all sentences' if limit is None else f'first {limit} sentences'} per pair; "
             f"beam size {results['beam_size']}.\n")
    text += ("- Scores: sacreBLEU BLEU (tokenizer per target language, see the signatures) and chrF++ "
             "(character 6-grams + word 2-grams); hypotheses in `hyps/`, references in `refs/`; "
             "`sacrebleu refs/P.txt -i hyps/P.txt -m bleu chrf --chrf-word-order 2 --tokenize T` "
             "(T from the pair's BLEU signature) gives the same numbers.\n")
    text += (f"- Train pairs: sentence pairs per language in the training corpus ({results.get('resource_sizes')}); "
             "rows are sorted by it.\n")
    text += f"- Resource buckets ({results.get('bucket_edges_note', '')}): {edges.describe()}.\n"
    baseline = results.get("baseline")
    if baseline:
        text += (f"- Δ: this run's score minus the baseline's ({baseline['path']}, step {baseline['step']}); "
                 f"p: {baseline['test']}, two-sided. A pair is compared only when both runs have the same "
                 "sacreBLEU signatures and references.\n")
    text += "\n" + table_markdown(results)
    signatures = sorted({e[key] for e in results["pairs"].values()
                         for key in ("bleu_signature", "chrf_signature", "spbleu_signature") if key in e})
    if signatures:
        text += "\nSignatures:\n\n" + "".join(f"- `{s}`\n" for s in signatures)
    if results.get("errors"):
        text += "\nNot scored:\n\n" + "".join(f"- {e}\n" for e in results["errors"])
    if baseline and baseline["not_compared"]:
        text += "\nNot compared with the baseline:\n\n" + "".join(f"- {e}\n" for e in baseline["not_compared"].values())
    return text


def write_reports(out_dir: Path, results: Mapping) -> None:
    """results.json, results.csv and results.md in `out_dir`."""
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    write_text_atomic(out_dir / "results.csv", csv_text(results))
    write_text_atomic(out_dir / "results.md", markdown(results))
