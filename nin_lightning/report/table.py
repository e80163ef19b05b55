"""Group jobs by their swept settings (all but the seed) and summarise each group over seeds."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nin_lightning.report.jobs import FAILED, METRICS, Job

SEED = "seed"
DIGITS = {"val/acc_best": 4, "test/acc": 4, "epochs": 1, "wall_time_s": 1}


@dataclass
class Row:
    """One swept setting: its jobs and the mean/std over seeds of the completed ones (std: None below 2)."""

    setting: dict[str, str]
    jobs: list[Job]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)

    @property
    def n_ok(self) -> int:
        return sum(j.ok for j in self.jobs)

    @property
    def n_failed(self) -> int:
        return sum(j.status == FAILED for j in self.jobs)

    @property
    def n_incomplete(self) -> int:
        return len(self.jobs) - self.n_ok - self.n_failed

    @property
    def n_changed(self) -> int:
        return sum(bool(j.changed) for j in self.jobs)

    @property
    def seeds(self) -> list[str]:
        return [j.overrides.get(SEED, "") for j in self.jobs if j.ok]

    def jobs_note(self) -> str:
        """'2 ok' or '1 ok, 1 FAILED, 1 incomplete, 1 changed' (failed, incomplete and changed jobs marked)."""
        parts = [f"{self.n_ok} ok"]
        if self.n_failed:
            parts.append(f"{self.n_failed} FAILED")
        if self.n_incomplete:
            parts.append(f"{self.n_incomplete} incomplete")
        if self.n_changed:
            parts.append(f"{self.n_changed} changed")
        return ", ".join(parts)


def sort_key(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs (a key missing in a job counts as a value)."""
    keys = sorted({k for j in jobs for k in j.overrides})
    return [k for k in keys if len({j.overrides.get(k, "") for j in jobs}) > 1]


def _summary(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(jobs: Sequence[Job], keys: Sequence[str]) -> list[Row]:
    """One Row per distinct setting of `keys`, mean ± std over the completed jobs (seeds)."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in keys), []).append(job)
    rows = []
    for values in sorted(groups, key=lambda vs: [sort_key(v) for v in vs]):
        row = Row(setting=dict(zip(keys, values, strict=True)), jobs=groups[values])
        for metric in METRICS:
            done = [v for j in row.jobs if j.ok and (v := j.metrics.get(metric)) is not None]
            row.mean[metric], row.std[metric] = _summary(done)
        rows.append(row)
    return rows


def fmt(mean: float | None, std: float | None, digits: int) -> str:
    """'0.9750 ± 0.0040'; just the mean from one seed; '-' without a completed job."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: Sequence[Row], keys: Sequence[str]) -> str:
    """The report's table: one line per setting."""
    head = [*(keys or ["setting"]), "seeds", *METRICS, "jobs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [*(row.setting.values() if keys else ["all"]), str(row.n_ok)]
        cells += [fmt(row.mean[m], row.std[m], DIGITS[m]) for m in METRICS]
        cells.append(row.jobs_note())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problem_lines(jobs: Sequence[Job]) -> list[str]:
    """A bullet per failed or incomplete job, with its error."""
    return [f"- `{j.name}`: **{j.status}**" + (f": {j.error}" if j.error else "") for j in jobs if not j.ok]


def changed_lines(jobs: Sequence[Job]) -> list[str]:
    """A bullet per job whose overrides changed since the sweep launched it (resume, longer trainer.max_epochs)."""
    return [f"- `{j.name}`: " + ", ".join(f"{k} {v}" for k, v in j.changed.items()) for j in jobs if j.changed]


def markdown(title: str, jobs: Sequence[Job], rows: Sequence[Row], keys: Sequence[str],
             plots: Sequence[Path], duplicates: Sequence[str] = ()) -> str:
    """The whole report.md."""
    n_failed = sum(j.status == FAILED for j in jobs)
    n_ok = sum(j.ok for j in jobs)
    lines = [
        f"# Ablation report: {title}",
        "",
        f"{len(jobs)} jobs: {n_ok} completed, {n_failed} failed, {len(jobs) - n_ok - n_failed} incomplete. "
        f"Swept: {', '.join(keys) or 'nothing but the seed'}; each cell is mean ± std (sample) over the seeds "
        "of the completed jobs; `seeds` counts them.",
        "",
        markdown_table(rows, keys),
    ]
    problems = problem_lines(jobs)
    if problems:
        lines += ["", "## Failed or incomplete jobs", "", *problems]
    changed = changed_lines(jobs)
    if changed:
        lines += ["", "## Changed after the sweep", "",
                  "Resumed or extended by hand (their .hydra/overrides.yaml differs from the sweep's); each stays "
                  "in the row of the setting it was launched with, its metrics are those it ended with.",
                  "", *changed]
    if duplicates:
        lines += ["", "## Duplicates", "", "Job dirs with the same setting and seed (e.g. a sweep launched twice into "
                  "new dirs) are one run: the completed one counts, once.", "", *(f"- {d}" for d in duplicates)]
    if plots:
        lines += ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[Row], keys: Sequence[str]) -> Path:
    """report.csv: the table with separate mean and std columns and job counts (n_changed: resumed by hand)."""
    metric_cols = [f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "n_seeds", "n_jobs", "n_failed", "n_incomplete", "n_changed", "seeds",
                         *metric_cols])
        for row in rows:
            stats = [row.mean[m] if s == "mean" else row.std[m] for m in METRICS for s in ("mean", "std")]
            writer.writerow([*row.setting.values(), row.n_ok, len(row.jobs), row.n_failed, row.n_incomplete,
                             row.n_changed, " ".join(row.seeds), *("" if v is None else f"{v:.6g}" for v in stats)])
    return path


def group_keys(jobs: Sequence[Job]) -> list[str]:
    """The swept keys that define a setting: all but the seed (the report averages over seeds)."""
    return [k for k in swept_keys(jobs) if k != SEED]


def write_markdown(path: Path, title: str, jobs: Sequence[Job], rows: Sequence[Row], keys: Sequence[str],
                   plots: Sequence[Path], duplicates: Sequence[str] = ()) -> Path:
    """report.md."""
    path.write_text(markdown(title, jobs, rows, keys, plots, duplicates))
    return path
