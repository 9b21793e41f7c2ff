"""Plot the release model's curves against its equal-FLOPs dense baseline.

    .venv/bin/python benchmarks/release_curves.py            # writes docs/release_curves.png

Reads the logs that the release training (scripts/device_release.sh) wrote on the GPU machine
(benchmarks/results/release_{moe,dense}_log.json and, when present, the second
seed's release_seed1_{moe,dense}_log.json) and draws, per run, validation and
training cross-entropy against steps (equal steps = equal tokens = equal FLOPs,
the two models having the same FLOPs per token) and validation cross-entropy
against training seconds. Prints the dev chrF++ each log holds.
"""

from __future__ import annotations

import argparse
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
RESULTS = os.path.join(ROOT, "benchmarks", "results")
RUNS = [("seed 0", "release_{}_log.json"), ("seed 1", "release_seed1_{}_log.json")]
STYLE = {"moe": ("mSwitch, 8 experts (26.4M params)", "tab:blue"), "dense": ("dense, equal FLOPs (15.3M)", "tab:orange")}


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def load_runs(results_dir: str) -> list[tuple[str, dict[str, dict]]]:
    """[(run label, {"moe": log, "dense": log})] for every run whose two logs exist."""
    runs = []
    for label, pattern in RUNS:
        paths = {kind: os.path.join(results_dir, pattern.format(kind)) for kind in STYLE}
        if all(os.path.isfile(p) for p in paths.values()):
            runs.append((label, {kind: read_json(p) for kind, p in paths.items()}))
    if not runs:
        raise SystemExit(f"no release logs in {results_dir}; copy them from the GPU run (scripts/device_release.sh)")
    return runs


def describe(label: str, logs: dict[str, dict]) -> str:
    parts = []
    for kind, log in logs.items():
        chrf = log.get("dev_chrf", {})
        parts.append(f"{kind}: {log['steps']} steps in {log['train_seconds']:.0f} s, validation "
                     f"{log['validation'][-1]['loss']:.3f}, dev median chrF++ {chrf.get('median_chrf', float('nan')):.1f}")
    return f"{label}: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "release_curves.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    runs = load_runs(args.results)
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 4.2 * len(runs)), squeeze=False)
    for row, (label, logs) in enumerate(runs):
        print(describe(label, logs))
        by_step, by_time = axes[row]
        for kind, log in logs.items():
            name, color = STYLE[kind]
            steps = [e["step"] for e in log["validation"]]
            by_step.plot(steps, [e["loss"] for e in log["validation"]], color=color, marker="o", markersize=3,
                         label=f"{name}: validation")
            by_step.plot([e["step"] for e in log["train"]], [e["cross_ent_loss"] for e in log["train"]],
                         color=color, alpha=0.35, linewidth=0.8, label=f"{name}: train")
            by_time.plot([e["time"] for e in log["validation"]], [e["loss"] for e in log["validation"]],
                         color=color, marker="o", markersize=3, label=name)
        by_step.set(title=f"{label}: cross-entropy vs steps (equal FLOPs)", xlabel="step",
                    ylabel="nats per target token", ylim=(1.3, 4.5))
        by_time.set(title=f"{label}: validation vs training seconds (one H200, shared)", xlabel="seconds",
                    ylabel="nats per target token", ylim=(2.2, 4.5))
        for ax in (by_step, by_time):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
