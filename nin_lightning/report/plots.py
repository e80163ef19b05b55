"""PNG plots (matplotlib's Agg backend): each metric against each swept parameter, and learning curves by setting."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nin_lightning.report.table import Row, label, sort_key

PLOT_METRICS = ("val/acc_best", "test/acc")
# the figures per epoch: {file: [(y label, panel title, [(history column, line label's suffix, line style)])]}
EPOCH_FIGURES = {
    "learning_curves.png": [(key, f"{title} (mean ± std over seeds)", [(key, "", "-")])
                            for key, title in (("val/acc", "validation accuracy"), ("train/loss", "training loss"))],
    "curves_train_val.png": [(title, f"{title}: training dashed, validation solid\n(mean ± std over seeds)",
                              [(f"val/{name}", " validation", "-"), (f"train/{name}", " training", "--")])
                             for name, title in (("acc", "accuracy"), ("loss", "loss"))],
}


def safe_name(text: str) -> str:
    """A file-name-safe version of a config key."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "setting"


def plot_param(path: Path, rows: Sequence[Row], param: str) -> Path:
    """Mean ± std of each metric against PARAM; a line per setting of the other keys (one series if each is a point)."""
    ordered = sorted({r.setting[param] for r in rows}, key=sort_key)
    numeric = all(sort_key(v)[0] == 0 for v in ordered)
    xs = {v: sort_key(v)[1] if numeric else float(i) for i, v in enumerate(ordered)}
    lines: dict[str, list[Row]] = {}
    for row in rows:
        lines.setdefault(label(row.setting, skip=param), []).append(row)
    if len(lines) > 1 and all(len(members) == 1 for members in lines.values()):
        lines = {"": list(rows)}
    fig, axes = _figure(len(PLOT_METRICS))
    for ax, metric in zip(axes, PLOT_METRICS, strict=True):
        for name, members in lines.items():
            pts = sorted((xs[r.setting[param]], r.mean[metric], r.std[metric] or 0.0) for r in members
                         if r.mean[metric] is not None)
            if pts:
                x, y, err = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=err, marker="o", capsize=4, linestyle="-" if name != "" else "none",
                            label=name if len(lines) > 1 else None)
        if not numeric:
            ax.set_xticks(list(xs.values()), list(xs), rotation=20)
        ax.set(xlabel=param, ylabel=metric, title=f"{metric} vs {param} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_epochs(path: Path, rows: Sequence[Row], panels: Sequence[tuple[str, str, Sequence[tuple[str, str, str]]]]
                ) -> Path:
    """A panel per PANELS entry: each setting's mean ± std curve of each history column, in the setting's colour."""
    fig, axes = _figure(len(panels))
    for ax, (ylabel, title, columns) in zip(axes, panels, strict=True):
        for row in rows:
            color = None
            for key, suffix, style in columns:
                color = _band(ax, row, key, label(row.setting) + suffix, color, style)
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def _band(ax: Any, row: Row, key: str, name: str, color: str | None, style: str) -> str | None:
    """ROW's mean curve of history column KEY with a ± std band; returns its colour (COLOR: no such column)."""
    epochs, means, stds = row.curve(key)
    if not epochs:
        return color
    line = ax.plot(epochs, means, marker=".", linestyle=style, color=color, label=name)[0]
    ax.fill_between(epochs, [m - s for m, s in zip(means, stds, strict=True)],
                    [m + s for m, s in zip(means, stds, strict=True)], color=line.get_color(), alpha=0.15)
    return line.get_color()


def _figure(panels: int) -> tuple[Figure, list]:
    """A figure with `panels` axes side by side, drawn by the Agg backend (no pyplot, no display)."""
    fig = Figure(figsize=(5 * panels, 3.8))
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_plots(out_dir: Path, rows: Sequence[Row], keys: Sequence[str]) -> list[Path]:
    """metric_vs_<param>.png for each swept parameter, learning_curves.png and curves_train_val.png."""
    out = [plot_param(out_dir / f"metric_vs_{safe_name(k)}.png", rows, k) for k in keys]
    if any(job.history for row in rows for job in row.jobs):
        out += [plot_epochs(out_dir / name, rows, panels) for name, panels in EPOCH_FIGURES.items()]
    return out
