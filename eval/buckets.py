"""Resource sizes, resource buckets and the averages reported over them.

A language's resource size is the number of sentence pairs it has in the
training corpus (`full_train` in `data/embedded/stats.json`). NLLB reports
averages over English->X, X->English and three buckets: high resource (more
than 1M pairs), low (at most 1M) and very low (at most 100k). Those edges
would put every language of the embedded corpus in one bucket (its languages
have 3k to 65k pairs each, median 16k), so its defaults split it near its
terciles: high more than 30,000 pairs, very low at most 10,000 (28 / 50 / 36
of its 114 languages). The default edges follow from the sizes alone
(`default_edges`), never from the test data, so a language lands in the same
bucket on every `--data`. `--bucket_edges 1000000,100000` gives NLLB's; the
edges used are stated in results.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

ENGLISH = "en"
BUCKETS = ("high", "low", "very_low", "unknown")
SCORES = ("bleu", "chrf", "spbleu")


@dataclasses.dataclass(frozen=True)
class BucketEdges:
    """high: size > high_above; very_low: size <= very_low_at_most; low: in between."""

    high_above: int
    very_low_at_most: int

    def __post_init__(self):
        if not 0 <= self.very_low_at_most < self.high_above:
            raise ValueError(f"--bucket_edges {self.high_above},{self.very_low_at_most}: give HIGH,VERY_LOW "
                             "with HIGH > VERY_LOW >= 0 (e.g. 1000000,100000 as NLLB)")

    @classmethod
    def parse(cls, text: str) -> "BucketEdges":
        """`"1000000,100000"` -> BucketEdges(1000000, 100000); ValueError says the format."""
        try:
            high, very_low = (int(part.replace("_", "")) for part in text.split(","))
        except ValueError:
            raise ValueError(f"--bucket_edges {text!r}: give HIGH,VERY_LOW pair counts, "
                             "e.g. 1000000,100000 (NLLB)") from None
        return cls(high, very_low)

    def bucket(self, size: int | None) -> str:
        if size is None:
            return "unknown"
        if size > self.high_above:
            return "high"
        return "very_low" if size <= self.very_low_at_most else "low"

    def describe(self) -> str:
        return (f"high: more than {self.high_above:,} training pairs; "
                f"low: {self.very_low_at_most + 1:,} to {self.high_above:,}; "
                f"very low: at most {self.very_low_at_most:,}")

    def range_text(self, bucket: str) -> str:
        """`"high"` -> `"> 1,000"`, `"low"` -> `"101–1,000"`, `"very_low"` -> `"≤ 100"` (training pairs)."""
        return {"high": f"> {self.high_above:,}", "low": f"{self.very_low_at_most + 1:,}–{self.high_above:,}",
                "very_low": f"≤ {self.very_low_at_most:,}"}[bucket]

    def to_json(self) -> dict:
        return {"high_above": self.high_above, "very_low_at_most": self.very_low_at_most}


NLLB_BUCKET_EDGES = BucketEdges(high_above=1_000_000, very_low_at_most=100_000)
EMBEDDED_BUCKET_EDGES = BucketEdges(high_above=30_000, very_low_at_most=10_000)  # see the docstring


def default_edges(sizes: Mapping[str, int]) -> tuple[BucketEdges, str]:
    """The edges for a training corpus of `sizes` ({lang: pairs}) when none are given, and why.

    NLLB's where some language has more than their high edge (1M pairs); on a
    smaller corpus they would put every language in one bucket, so there the
    embedded corpus's edges.
    """
    if sizes and max(sizes.values()) > NLLB_BUCKET_EDGES.high_above:
        return NLLB_BUCKET_EDGES, "NLLB's edges"
    return EMBEDDED_BUCKET_EDGES, ("the embedded corpus's default, near its terciles; with no language over "
                                   "1,000,000 pairs NLLB's edges would put all languages in one bucket")


def load_resource_sizes(path: Path) -> dict[str, int]:
    """{lang: training pairs} from a corpus stats.json or a plain {"de": 12345, ...} object.

    Raises ValueError (one line) when the file is missing or holds neither form.
    """
    path = Path(path)
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--resource_sizes {path}: no such file; pass a stats.json or a "
                         '{"<lang>": <training pairs>} file') from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--resource_sizes {path}: not JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(stats, dict) and isinstance(stats.get("languages"), dict):
        try:
            return {lang: int(entry["full_train"]) for lang, entry in stats["languages"].items()}
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"--resource_sizes {path}: each languages.<lang> entry needs an integer "
                             "full_train") from None
    if isinstance(stats, dict) and all(isinstance(n, int) for n in stats.values()):
        return dict(stats)
    raise ValueError(f"--resource_sizes {path}: expected a corpus stats.json or a "
                     '{"<lang>": <training pairs>} object')


def split_pair(pair: str) -> tuple[str, str]:
    """`"en-zh-Hans"` -> ("en", "zh-Hans"); `"pt-BR-en"` -> ("pt-BR", "en").

    Codes are cut where the next part is a lowercase 2-3 letter language
    subtag: scripts (`Hans`) and regions (`BR`) never are.
    """
    parts = pair.split("-")
    for cut in range(1, len(parts)):
        if len(parts[cut]) in (2, 3) and parts[cut].isalpha() and parts[cut].islower():
            return "-".join(parts[:cut]), "-".join(parts[cut:])
    raise ValueError(f"pair {pair!r}: write it as <src>-<tgt>, e.g. en-de or zh-Hans-en")


def direction(src: str, tgt: str) -> str:
    """"en-xx", "xx-en" or "xx-yy" (neither side English)."""
    if src == ENGLISH:
        return "en-xx"
    return "xx-en" if tgt == ENGLISH else "xx-yy"


def _mean(entries: list[Mapping]) -> dict:
    result = {"pairs": len(entries)}
    for score in SCORES:
        values = [entry[score] for entry in entries if score in entry]
        if values and len(values) == len(entries):
            result[score] = math.fsum(values) / len(values)
    return result


def averages(pairs: Mapping[str, Mapping], *, buckets: Mapping[str, str]) -> dict:
    """Mean scores over directions and resource buckets.

    Args:
      pairs: {"en-de": {"src": "en", "tgt": "de", "bleu": .., "chrf": .., ...}, ...}.
      buckets: {lang: "high" | "low" | "very_low" | "unknown"}.

    Returns:
      {"en-xx": {"pairs": n, "bleu": .., "chrf": ..}, "xx-en": {..}, "xx-yy": {..},
       "buckets": {"high": {"en-xx": {..}, "xx-en": {..}, "both": {..}}, ...}};
      groups without pairs are left out.
    """
    groups: dict[str, list] = {"en-xx": [], "xx-en": [], "xx-yy": []}
    by_bucket: dict[str, dict[str, list]] = {b: {"en-xx": [], "xx-en": [], "both": []} for b in BUCKETS}
    for entry in pairs.values():
        kind = direction(entry["src"], entry["tgt"])
        groups[kind].append(entry)
        if kind != "xx-yy":
            language = entry["tgt"] if kind == "en-xx" else entry["src"]
            bucket = buckets.get(language, "unknown")
            by_bucket[bucket][kind].append(entry)
            by_bucket[bucket]["both"].append(entry)
    result = {kind: _mean(entries) for kind, entries in groups.items() if entries}
    result["buckets"] = {
        bucket: {kind: _mean(entries) for kind, entries in kinds.items() if entries}
        for bucket, kinds in by_bucket.items() if kinds["both"]
    }
    return result


def language_sizes(langs: Iterable[str], sizes: Mapping[str, int], edges: BucketEdges) -> dict:
    """{lang: {"resource_size": n or None, "bucket": ...}} for the languages of a run."""
    return {lang: {"resource_size": sizes.get(lang), "bucket": edges.bucket(sizes.get(lang))} for lang in langs}
