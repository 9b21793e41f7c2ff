"""per_language_bleu.png: BLEU per language, both directions, sorted by training size.

Languages run left to right from the largest training set to the smallest,
as in GShard's figure 6; with a baseline a second panel shows the BLEU delta
per language (this run minus the baseline). matplotlib's Agg backend: no
display needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from eval import report

ENGLISH = "en"
COLORS = {"en-xx": "#1f77b4", "xx-en": "#ff7f0e"}
LABELS = {"en-xx": "English→X", "xx-en": "X→English"}


def _compact(size: int | None) -> str:
    """2400 -> "2.4k", 1_200_000 -> "1.2M", None -> "?"."""
    if size is None:
        return "?"
    for divisor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if size >= divisor:
            return f"{size / divisor:.3g}{suffix}"
    return str(size)


def plot(results: Mapping, path: Path) -> None:
    """Writes the figure for `results` (the results.json object) to `path`."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    langs = report.sorted_languages(results)
    pairs = {(e["src"], e["tgt"]): e for e in results["pairs"].values()}
    deltas = results.get("baseline", {}).get("delta_bleu", {})
    keys = {"en-xx": lambda lang: f"{ENGLISH}-{lang}", "xx-en": lambda lang: f"{lang}-{ENGLISH}"}
    series = {"en-xx": [pairs.get((ENGLISH, lang), {}).get("bleu") for lang in langs],
              "xx-en": [pairs.get((lang, ENGLISH), {}).get("bleu") for lang in langs]}

    panels = 2 if deltas else 1
    width = max(8.0, 0.22 * len(langs) + 2)
    fig, axes = plt.subplots(panels, 1, figsize=(width, 4.2 * panels), squeeze=False, sharex=True)
    positions = range(len(langs))
    bar = 0.4
    for offset, kind in ((-bar / 2, "en-xx"), (bar / 2, "xx-en")):
        xs = [x + offset for x, v in zip(positions, series[kind]) if v is not None]
        ys = [v for v in series[kind] if v is not None]
        axes[0][0].bar(xs, ys, width=bar, color=COLORS[kind], label=LABELS[kind])
    axes[0][0].set_ylabel("BLEU")
    title = f"BLEU per language, step {results['step']} ({results['data']}, {results['split']})"
    axes[0][0].set_title(title + " — high → low resource")
    axes[0][0].legend(loc="upper right")
    axes[0][0].grid(axis="y", alpha=0.3)
    if deltas:
        ax = axes[1][0]
        for offset, kind in ((-bar / 2, "en-xx"), (bar / 2, "xx-en")):
            values = [deltas.get(keys[kind](lang)) for lang in langs]
            xs = [x + offset for x, v in zip(positions, values) if v is not None]
            ax.bar(xs, [v for v in values if v is not None], width=bar, color=COLORS[kind], label=LABELS[kind])
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("Δ BLEU vs baseline")
        ax.legend(loc="upper right")
        ax.grid(axis="y", alpha=0.3)
    info = results.get("languages", {})
    # Dashed lines where the resource bucket changes (high | low | very low).
    bucket_of = [info.get(lang, {}).get("bucket", "unknown") for lang in langs]
    for x in range(1, len(langs)):
        if bucket_of[x] != bucket_of[x - 1]:
            for row in axes:
                row[0].axvline(x - 0.5, color="gray", linestyle="--", linewidth=0.8)
    bottom = axes[-1][0]
    bottom.set_xticks(list(positions))
    labels = [f"{lang} ({_compact(info.get(lang, {}).get('resource_size'))})" for lang in langs]
    bottom.set_xticklabels(labels, rotation=90, fontsize=7)
    bottom.set_xlabel("language (training pairs); dashed lines separate resource buckets")
    bottom.set_xlim(-0.7, max(len(langs) - 0.3, 0.7))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(temporary, dpi=110)
    plt.close(fig)
    temporary.replace(path)
