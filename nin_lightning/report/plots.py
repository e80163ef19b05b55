"""PNG plots (matplotlib's Agg backend): each metric against each swept parameter, and learning curves by setting."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nin_lightning.report.jobs import to_float
from nin_lightning.report.table import Row, sort_key

PLOT_METRICS = ("val/acc_best", "test/acc")
CURVES = (("val/acc", "validation accuracy"), ("train/loss", "training loss"))


def safe_name(text: str) -> str:
    """A file-name-safe version of a config key."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "setting"


def label(setting: dict[str, str], skip: str | None = None) -> str:
    """'model.dropout=0.5 optimizer.lr=0.1' (the setting, less one key)."""
    return " ".join(f"{k}={v}" for k, v in setting.items() if k != skip) or "all"


def _positions(values: Sequence[str]) -> tuple[dict[str, float], bool]:
    """x positions: the numbers themselves when all values are numeric, else 0, 1, 2, ... (categorical)."""
    ordered = sorted(set(values), key=sort_key)
    numbers = [to_float(v) for v in ordered]
    if all(n is not None for n in numbers):
        return {v: float(n) for v, n in zip(ordered, numbers, strict=True) if n is not None}, True
    return {v: float(i) for i, v in enumerate(ordered)}, False


def _lines(rows: Sequence[Row], param: str) -> dict[str, list[Row]]:
    """One line per setting of the other swept keys; a single series when every line would be one point
    (e.g. an Optuna search, where no two trials share a setting)."""
    lines: dict[str, list[Row]] = {}
    for row in rows:
        lines.setdefault(label(row.setting, skip=param), []).append(row)
    if len(lines) > 1 and all(len(members) == 1 for members in lines.values()):
        return {"": list(rows)}
    return lines


def plot_param(path: Path, rows: Sequence[Row], param: str) -> Path:
    """Mean ± std over seeds of each metric against `param`; one line per setting of the other keys."""
    xs, numeric = _positions([r.setting[param] for r in rows])
    fig, axes = _figure(len(PLOT_METRICS))
    for ax, metric in zip(axes, PLOT_METRICS, strict=True):
        lines = _lines(rows, param)
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


def _mean_curve(row: Row, key: str) -> tuple[list[float], list[float], list[float]]:
    """Epochs, mean and std over the row's jobs of one history column."""
    by_epoch: dict[float, list[float]] = {}
    for job in row.jobs:
        for rec in job.history:
            if key in rec:
                by_epoch.setdefault(rec["epoch"], []).append(rec[key])
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def plot_curves(path: Path, rows: Sequence[Row]) -> Path | None:
    """Validation accuracy and training loss per epoch, one line (mean, ± std band) per setting."""
    if not any(job.history for row in rows for job in row.jobs):
        return None
    fig, axes = _figure(len(CURVES))
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        for row in rows:
            epochs, means, stds = _mean_curve(row, key)
            if epochs:
                line = ax.plot(epochs, means, marker=".", label=label(row.setting))[0]
                low = [m - s for m, s in zip(means, stds, strict=True)]
                high = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        ax.set(xlabel="epoch", ylabel=key, title=f"{title} (mean ± std over seeds)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


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
    """metric_vs_<param>.png for each swept parameter, and learning_curves.png."""
    out = [plot_param(out_dir / f"metric_vs_{safe_name(k)}.png", rows, k) for k in keys]
    curves = plot_curves(out_dir / "learning_curves.png", rows)
    return out + ([curves] if curves else [])
