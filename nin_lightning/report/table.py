"""Group jobs by their swept settings (all but the seed) and summarise each group over seeds."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nin_lightning.errors import UserError
from nin_lightning.report.jobs import FAILED, METRICS, SIZE, Job
from nin_lightning.report.stats import CONFIDENCE, Difference, welch

SEED = "seed"
DIGITS = {"val/acc_best": 4, "test/acc": 4, "epochs": 1, "wall_time_s": 1}
COMPARED = "test/acc"  # the metric whose difference to the baseline the report tests


@dataclass
class Row:
    """One swept setting: its jobs and the mean/std over seeds of the completed ones (std: None below 2)."""

    setting: dict[str, str]
    jobs: list[Job]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)
    diff: Difference | None = None  # to the baseline row (None: this is the baseline, or none was compared)

    def values(self, metric: str) -> list[float]:
        """METRIC of each completed job (one per seed)."""
        return [v for j in self.jobs if j.ok and (v := j.metrics.get(metric)) is not None]

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
            row.mean[metric], row.std[metric] = _summary(row.values(metric))
        for size in SIZE:  # the same in every job of a setting (a job that failed early still knows its model)
            known = [v for j in row.jobs if (v := j.metrics.get(size)) is not None]
            row.mean[size] = known[0] if known else None
        rows.append(row)
    return rows


def label(setting: dict[str, str]) -> str:
    """'model.dropout=0.5 optimizer.lr=0.1', or 'all' for a sweep of seeds only."""
    return " ".join(f"{k}={v}" for k, v in setting.items()) or "all"


def pick_baseline(rows: Sequence[Row], wanted: dict[str, str] | None, metric: str = COMPARED) -> Row | None:
    """The row that WANTED ({key: value}, from --baseline) names; by default the best mean METRIC.

    Raises UserError when WANTED names a key that is not swept, or matches no row or several."""
    if not wanted:
        scored = [r for r in rows if r.mean.get(metric) is not None]
        return max(scored, key=lambda r: r.mean[metric]) if scored else None
    keys = list(rows[0].setting) if rows else []
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        raise UserError(f"--baseline {unknown[0]}: not a swept key of this sweep; give one of "
                        f"{', '.join(keys) or '(none: only seeds were swept)'}")
    matches = [r for r in rows if all(r.setting.get(k) == v for k, v in wanted.items())]
    if len(matches) != 1:
        given = " ".join(f"{k}={v}" for k, v in wanted.items())
        settings = "; ".join(label(r.setting) for r in rows)
        problem = "matches no setting" if not matches else f"matches {len(matches)} settings; add KEY=VALUE for " + \
            ", ".join(k for k in keys if k not in wanted)
        raise UserError(f"--baseline {given} {problem} (settings: {settings})")
    return matches[0]


def compare_to(rows: Sequence[Row], baseline: Row | None, metric: str = COMPARED) -> None:
    """Each row's difference to BASELINE in METRIC over seeds (stats.welch)."""
    for row in rows:
        row.diff = None if baseline is None or row is baseline else welch(row.values(metric), baseline.values(metric))


def fmt(mean: float | None, std: float | None, digits: int) -> str:
    """'0.9750 ± 0.0040'; just the mean from one seed; '-' without a completed job."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_count(value: float | None) -> str:
    """350388 -> '350.4 k', 4138752 -> '4.14 M'."""
    if value is None:
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


def diff_cells(row: Row, baseline: Row | None) -> list[str]:
    """Δ, 95 % CI and p: 'baseline' on the baseline's row, '-' where there are too few seeds to say."""
    if baseline is None:
        return ["-", "-", "-"]
    if row is baseline:
        return ["baseline", "", ""]
    d = row.diff
    if d is None or d.diff is None:
        return ["-", "-", "-"]
    if not d.tested:
        return [f"{d.diff:+.4f}", "-", "-"]
    return [f"{d.diff:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]", f"{d.p:.3g}"]


def markdown_table(rows: Sequence[Row], keys: Sequence[str], baseline: Row | None = None) -> str:
    """The report's table: one line per setting, with its difference to the baseline."""
    head = [*(keys or ["setting"]), "seeds", *METRICS[:2], f"Δ {COMPARED}", f"{CONFIDENCE:.0%} CI", "p (Welch)",
            *SIZE, *METRICS[2:], "jobs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [*(row.setting.values() if keys else ["all"]), str(row.n_ok)]
        cells += [fmt(row.mean[m], row.std[m], DIGITS[m]) for m in METRICS[:2]]
        cells += diff_cells(row, baseline)
        cells += [fmt_count(row.mean[m]) for m in SIZE]
        cells += [fmt(row.mean[m], row.std[m], DIGITS[m]) for m in METRICS[2:]]
        cells.append(row.jobs_note())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shared(jobs: Sequence[Job], key: str) -> str | None:
    values = sorted({j.info[key] for j in jobs if key in j.info})
    return values[0] if len(values) == 1 else (f"varies ({', '.join(values)})" if values else None)


def header_lines(jobs: Sequence[Job], keys: Sequence[str], fixed: dict[str, str], baseline: Row | None,
                 chosen: bool) -> list[str]:
    """What was compared, with what held fixed (dataset, epochs, common overrides, code), against what."""
    seeds = sorted({j.overrides.get(SEED, "") for j in jobs} - {""}, key=sort_key)
    lines = [f"- **Compared**: {', '.join(keys) or 'nothing but the seed'}; over seeds {', '.join(seeds) or '-'}"]
    facts = [f"{name} {value}" for name, key in (("dataset", "dataset"), ("max epochs", "max_epochs"),
                                                 ("code", "code"))
             if (value := _shared(jobs, key)) is not None]
    lines.append(f"- **Fixed**: {'; '.join(facts) or '-'}")
    if fixed:
        lines.append("- **Common overrides**: " + " ".join(f"`{k}={v}`" for k, v in fixed.items()))
    if baseline is not None:
        how = "--baseline" if chosen else f"the best mean {COMPARED}; choose with --baseline KEY=VALUE"
        lines.append(f"- **Baseline**: {label(baseline.setting)} ({how})")
    return lines


def note_lines(rows: Sequence[Row], baseline: Row | None) -> list[str]:
    """How to read Δ, CI and p, and the settings with too few seeds to say."""
    if baseline is None:
        return []
    lines = [f"Δ {COMPARED}: a setting's mean minus the baseline's; {CONFIDENCE:.0%} CI of that difference and "
             "the p-value of Welch's t-test over seeds (scipy.stats.ttest_ind, equal_var=False). A CI that "
             "holds 0 (a large p) means the seeds cannot tell the setting from the baseline."]
    notes = [f"- {label(r.setting)}: {r.diff.note}" for r in rows if r.diff is not None and r.diff.note]
    if notes:
        lines += ["", "Read with care (add seeds, e.g. `seed=1,2,3,4,5`):", "", *notes]
    return lines


def problem_lines(jobs: Sequence[Job]) -> list[str]:
    """A bullet per failed or incomplete job, with its error."""
    return [f"- `{j.name}`: **{j.status}**" + (f": {j.error}" if j.error else "") for j in jobs if not j.ok]


def changed_lines(jobs: Sequence[Job]) -> list[str]:
    """A bullet per job whose overrides changed since the sweep launched it (resume, longer trainer.max_epochs)."""
    return [f"- `{j.name}`: " + ", ".join(f"{k} {v}" for k, v in j.changed.items()) for j in jobs if j.changed]


def markdown(title: str, jobs: Sequence[Job], rows: Sequence[Row], keys: Sequence[str], plots: Sequence[Path],
             fixed: dict[str, str] | None = None, baseline: Row | None = None, chosen: bool = False,
             duplicates: Sequence[str] = ()) -> str:
    """The whole report.md."""
    body = section(jobs, rows, keys, fixed or {}, baseline, chosen, duplicates)
    return "\n".join([f"# Ablation report: {title}", "", *body, *plot_lines(plots)]) + "\n"


def section(jobs: Sequence[Job], rows: Sequence[Row], keys: Sequence[str], fixed: dict[str, str],
            baseline: Row | None, chosen: bool, duplicates: Sequence[str] = ()) -> list[str]:
    """A sweep's header, table, notes, problems and changed jobs (report.md; one per sweep with --compare)."""
    n_failed = sum(j.status == FAILED for j in jobs)
    n_ok = sum(j.ok for j in jobs)
    lines = [
        *header_lines(jobs, keys, fixed, baseline, chosen),
        "",
        f"{len(jobs)} jobs: {n_ok} completed, {n_failed} failed, {len(jobs) - n_ok - n_failed} incomplete. "
        f"Swept: {', '.join(keys) or 'nothing but the seed'}; each cell is mean ± std (sample) over the seeds "
        "of the completed jobs; `seeds` counts them.",
        "",
        markdown_table(rows, keys, baseline),
    ]
    notes = note_lines(rows, baseline)
    if notes:
        lines += ["", *notes]
    problems = problem_lines(jobs)
    if problems:
        lines += ["", "### Failed or incomplete jobs", "", *problems]
    changed = changed_lines(jobs)
    if changed:
        lines += ["", "### Changed after the sweep", "",
                  "Resumed or extended by hand (their .hydra/overrides.yaml differs from the sweep's); each stays "
                  "in the row of the setting it was launched with, its metrics are those it ended with.",
                  "", *changed]
    if duplicates:
        lines += ["", "### Duplicates", "", "Job dirs with the same setting and seed (e.g. a sweep launched twice "
                  "into new dirs) are one run: the completed one counts, once.", "", *(f"- {d}" for d in duplicates)]
    return lines


def plot_lines(plots: Sequence[Path]) -> list[str]:
    return ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)] if plots else []


def write_csv(path: Path, rows: Sequence[Row], keys: Sequence[str], baseline: Row | None = None,
              sweep: str | None = None) -> Path:
    """report.csv: the table with separate mean and std columns, job counts (n_changed: resumed by hand),
    params, MACs and the difference to the baseline (is_baseline, diff, ci_low, ci_high, p_welch, note).
    With SWEEP (--compare), rows are appended under a leading `sweep` column."""
    metric_cols = [f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")]
    diff_cols = ["is_baseline", f"{COMPARED}_diff", "ci_low", "ci_high", "p_welch", "note"]
    new_file = sweep is None or not path.exists()
    with path.open("w" if sweep is None else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow([*(["sweep"] if sweep is not None else []), *keys, "n_seeds", "n_jobs", "n_failed",
                             "n_incomplete", "n_changed", "seeds", *metric_cols, *SIZE, *diff_cols])
        for row in rows:
            stats = [row.mean[m] if s == "mean" else row.std[m] for m in METRICS for s in ("mean", "std")]
            d = row.diff or Difference(None)
            writer.writerow([*([sweep] if sweep is not None else []), *row.setting.values(), row.n_ok,
                             len(row.jobs), row.n_failed, row.n_incomplete, row.n_changed, " ".join(row.seeds),
                             *(_num(v) for v in stats), *(_int(row.mean[m]) for m in SIZE),
                             int(row is baseline),
                             *(_num(v) for v in (d.diff, d.low, d.high, d.p)), d.note])
    return path


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _int(value: float | None) -> str:
    return "" if value is None else str(int(value))


def group_keys(jobs: Sequence[Job]) -> list[str]:
    """The swept keys that define a setting: all but the seed (the report averages over seeds)."""
    return [k for k in swept_keys(jobs) if k != SEED]


def write_markdown(path: Path, title: str, jobs: Sequence[Job], rows: Sequence[Row], keys: Sequence[str],
                   plots: Sequence[Path], fixed: dict[str, str] | None = None, baseline: Row | None = None,
                   chosen: bool = False, duplicates: Sequence[str] = ()) -> Path:
    """report.md."""
    path.write_text(markdown(title, jobs, rows, keys, plots, fixed, baseline, chosen, duplicates))
    return path
