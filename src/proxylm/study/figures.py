"""The study's PNG figures: raw BPB against training FLOPs and against raw bytes seen (every arm
and size, seeds averaged), final BPB against model size, stability bars, the translation probe's
accuracy and what the compressed view does to its raw bytes' BPB."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from proxylm.io import atomic_path
from proxylm.study.arms import ARMS
from proxylm.study.config import Arm
from proxylm.study.rows import Row, alignment, mean_curve


def write_figures(rows: list[Row], stability: dict[str, Any] | None, directory: Path) -> dict[str, Path]:
    """Every figure there is data for; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    plots = {
        "bpb_vs_flops.png": plot_curves if rows else None,
        "bpb_vs_raw_bytes.png": plot_curves_raw_bytes if any(mean_curve(row).has_raw_bytes for row in rows) else None,
        "bpb_vs_size.png": plot_scale if len({r.size for r in rows}) > 1 else None,
        "stability.png": plot_stability if stability and stability.get("rows") else None,
        "translation.png": plot_translation if any(r.values("translation", "byte_accuracy") for r in rows) else None,
    }
    written = {}
    for name, plot in plots.items():
        if plot is None:
            continue
        fig = plot(rows, stability)
        with atomic_path(directory / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        written[name] = directory / name
    return written


def arm_colors() -> dict[Arm, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    distinct = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten dark hues first, then their light pairs
    return {arm: cmap(distinct[i % 20]) for i, arm in enumerate(ARMS)}


def plot_curves(rows: list[Row], stability: dict[str, Any] | None):
    return plot_curves_against(rows, "flops", "training FLOPs", "Raw bits per byte against training compute")


def plot_curves_raw_bytes(rows: list[Row], stability: dict[str, Any] | None):
    return plot_curves_against(rows, "raw_bytes", "raw bytes trained on (bytes in raw views)",
                               "Raw bits per byte against raw bytes seen")


def plot_curves_against(rows: list[Row], x_key: str, x_label: str, title_text: str):
    """Held-out BPB of every arm and size (line style) against one of the curve points' counters."""
    import matplotlib.pyplot as plt

    colors = arm_colors()
    styles = ["-", "--", ":", "-."]
    sizes = list(dict.fromkeys(row.size for row in rows))
    fig, ax = plt.subplots(figsize=(10, 6))
    for row in rows:
        curve = mean_curve(row)
        # a point at x = 0 (no raw byte yet, e.g. early in a translation warm-up) has no place on a log axis
        points = [(x, bpb) for x, bpb in zip(getattr(curve, x_key), curve.bpb) if x is not None and x > 0]
        if not points:
            continue
        xs, ys = zip(*points)
        style = styles[sizes.index(row.size) % len(styles)]
        ax.plot(xs, ys, style, marker="o", markersize=3, color=colors[row.arm], label=f"{row.arm.value} ({row.size})")
        if row.n > 1:
            finals = row.values("bpb")
            mean = statistics.fmean(finals)
            ax.errorbar([xs[-1]], [mean], yerr=[[mean - min(finals)], [max(finals) - mean]], color=colors[row.arm], capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("held-out raw BPB")
    ax.set_title(f"{title_text} (seed mean; bars: seed range)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    return fig


def plot_scale(rows: list[Row], stability: dict[str, Any] | None):
    import matplotlib.pyplot as plt

    colors = arm_colors()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in ARMS:
        points = sorted((row.params, row.bpb, row.values("bpb")) for row in rows if row.arm is arm and row.params)
        if len(points) < 2:
            continue
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], marker="o", color=colors[arm], label=arm.value)
        for x, _, values in points:
            ax.vlines(x, min(values), max(values), color=colors[arm], alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters")
    ax.set_ylabel("held-out raw BPB (final)")
    ax.set_title("Final BPB by model size, each at its size's budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_stability(rows: list[Row], stability: dict[str, Any] | None):
    import matplotlib.pyplot as plt

    data = sorted(stability["rows"], key=lambda r: r["distance"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([r["proxy"] for r in data], [r["distance"] for r in data], yerr=[r["std"] for r in data], capsize=4, color="tab:blue")
    ax.set_ylabel("normalised Levenshtein distance")
    ax.set_title(f"Proxy stability under {stability['deletion']:.0%} character deletions (lower = more stable)")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def plot_translation(rows: list[Row], stability: dict[str, Any] | None):
    import matplotlib.pyplot as plt

    probed = [row for row in rows if row.values("translation", "byte_accuracy")]
    labels = [f"{row.arm.value}\n({row.size})" for row in probed]
    xs = range(len(probed))
    fig, (acc, bits) = plt.subplots(2, 1, figsize=(max(8.0, 0.6 * len(probed)), 8.5))
    width = 0.4
    acc.bar([x - width / 2 for x in xs], [row.mean("translation", "byte_accuracy") for row in probed], width, label="compressed -> raw")
    acc.bar([x + width / 2 for x in xs], [row.mean("translation", "raw_to_compressed", "accuracy") or 0.0 for row in probed], width, label="raw -> compressed")
    acc.set_ylabel("greedy accuracy (positions)")
    acc.set_title("Translation probe: accuracy")
    acc.legend(fontsize=7)
    gaps = [alignment(row) for row in probed]
    bits.bar(list(xs), [g.mean for g in gaps], 0.6, color=["tab:green" if g.mean < 0 else "tab:red" for g in gaps],
             yerr=[2 * g.se if g.se is not None else 0.0 for g in gaps], capsize=4)
    bits.axhline(0.0, color="black", linewidth=0.8)
    bits.set_ylabel("BPB given compressed view\nminus plain BPB (± 2 SE)")
    bits.set_title("Translation probe: does the compressed view help predict its raw bytes? (below 0: yes; paired by seed)")
    for ax in (acc, bits):
        ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
