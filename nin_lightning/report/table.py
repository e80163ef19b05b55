"""Group jobs by their swept settings (all but the seed) and summarise each group over seeds."""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nin_lightning.atomic_files import atomic_write
from nin_lightning.errors import UserError
from nin_lightning.report.jobs import DATA_SIZES, FAILED, INCOMPLETE, METRICS, OK, REJECTED, SIZE, Job
from nin_lightning.report.stats import ALPHA, CONFIDENCE, POWER, Difference, paired, seeds_for, still_improving, welch

SEED = "seed"
DIGITS = {"val/acc_best": 4, "test/acc": 4, "epochs": 1, "wall_time_s": 1}
COMPARED = "test/acc"  # the metric whose difference to the baseline the report tests
CONVERGENCE = "val/acc"  # the history column whose last epochs say whether a setting is still improving
# The data a job saw and the model's shape: jobs of one setting that differ in one of these are never pooled
# (params and the images per split from metrics.json, the rest from the job's config).
SHAPE_KEYS = ("dataset.name", "dataset.split", "dataset.val_size", "dataset.split_seed", "dataset.image_size",
              "dataset.in_channels", "dataset.num_classes", "model.preset", "model.width", "model.batch_norm",
              "model.final_relu", "params", *DATA_SIZES)
# ... and what else makes two jobs of the same seed start from other weights or see the data in another order:
# a setting that differs from the baseline in one of these is not paired with it by seed.
ORDER_KEYS = ("model.init", "model.init_std", "dataset.batch_size", "trainer.devices", "trainer.num_nodes")
MARKS = {"failed": "FAILED", "rejected": "NOT USED", "incomplete": "incomplete", "changed": "changed"}


def tally(jobs: Sequence[Job]) -> dict[str, int]:
    """Jobs per outcome (a Job's status is always one of these four) and changed (resumed by hand)."""
    counts = Counter(j.status for j in jobs)
    return {"ok": counts[OK], "failed": counts[FAILED], "rejected": counts[REJECTED],
            "incomplete": counts[INCOMPLETE], "changed": sum(bool(j.changed) for j in jobs)}


@dataclass
class Row:
    """One swept setting: its jobs and the mean/std over seeds of the completed ones (std: None below 2)."""

    setting: dict[str, str]
    jobs: list[Job]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)
    diff: Difference | None = None  # to the baseline row (None: this is the baseline, or none was compared)
    paired: Difference | None = None  # the same, paired by seed (diff None: not paired, the note says why)
    seeds_needed: int | None = None  # seeds per setting for 80 % power (stats.seeds_for)
    needed_note: str = ""  # why there is no seeds_needed
    improving: bool | None = None  # the mean validation accuracy reached a new best in the last epochs

    def values(self, metric: str) -> list[float]:
        """METRIC of each completed job (one per seed)."""
        return [v for j in self.jobs if j.ok and (v := j.metrics.get(metric)) is not None]

    def by_seed(self, metric: str) -> dict[str, float]:
        """{seed: METRIC} of the completed jobs."""
        return {j.overrides.get(SEED, ""): v for j in self.jobs if j.ok and (v := j.metrics.get(metric)) is not None}

    def curve(self, key: str) -> tuple[list[float], list[float], list[float]]:
        """Epochs, mean and std over the completed jobs of one history.csv column."""
        by_epoch: dict[float, list[float]] = {}
        for job in self.jobs:
            for rec in job.history if job.ok else ():
                if key in rec:
                    by_epoch.setdefault(rec["epoch"], []).append(rec[key])
        epochs = sorted(by_epoch)
        means = [statistics.fmean(by_epoch[e]) for e in epochs]
        stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
        return epochs, means, stds

    @property
    def n(self) -> dict[str, int]:
        """The jobs per outcome (`tally`)."""
        return tally(self.jobs)

    def jobs_note(self) -> str:
        """'2 ok' or '1 ok, 1 FAILED, 1 NOT USED, 1 incomplete, 1 changed'."""
        n = self.n
        return ", ".join([f"{n['ok']} ok", *(f"{n[key]} {mark}" for key, mark in MARKS.items() if n[key])])


def sort_key(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def group_keys(jobs: Sequence[Job]) -> list[str]:
    """The override keys whose value differs between jobs (a missing key counts as a value), less the seed."""
    keys = sorted({k for j in jobs for k in j.overrides} - {SEED})
    return [k for k in keys if len({j.overrides.get(k, "") for j in jobs}) > 1]


def shape_of(job: Job, key: str) -> str | None:
    """KEY of SHAPE_KEYS or ORDER_KEYS for JOB: from its metrics.json (params, images per split) or its config."""
    value = job.metrics.get(key) if key in (*SIZE, *DATA_SIZES) else job.config.get(key)
    return None if value is None else str(value)


def set_apart(groups: dict[tuple[str, ...], list[Job]]) -> None:
    """Mark REJECTED each completed job whose SHAPE_KEYS value is not its setting's most common: never pooled."""
    done = [j for group in groups.values() for j in group if j.ok]
    for key in SHAPE_KEYS:
        sweep_wide = Counter(v for j in done if (v := shape_of(j, key)) is not None)
        for group in groups.values():
            known = [(j, v) for j in group if j.ok and (v := shape_of(j, key)) is not None]
            values = [v for _, v in known]
            counts = Counter(values)
            if len(counts) < 2:
                continue
            ref = max(counts, key=lambda v: (counts[v], sweep_wide[v], -values.index(v)))
            for job, value in known:
                if value != ref:
                    job.status = REJECTED
                    job.error = (f"not used: {key}={value}, but {ref} in the other jobs of its setting "
                                 "(another dataset or model shape is never pooled)")


def aggregate(jobs: Sequence[Job], keys: Sequence[str]) -> list[Row]:
    """One Row per distinct setting of KEYS: mean ± std over the completed jobs (seeds), other shapes set apart."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in keys), []).append(job)
    set_apart(groups)
    rows = []
    for values in sorted(groups, key=lambda vs: [sort_key(v) for v in vs]):
        row = Row(setting=dict(zip(keys, values, strict=True)), jobs=groups[values])
        for metric in METRICS:
            done = row.values(metric)
            row.mean[metric] = statistics.fmean(done) if done else None
            row.std[metric] = statistics.stdev(done) if len(done) > 1 else None
        for size in SIZE:  # the same in every job of a setting (a job that failed early still knows its model)
            row.mean[size] = next((v for j in row.jobs if (v := j.metrics.get(size)) is not None), None)
        row.improving = still_improving(row.curve(CONVERGENCE)[1])
        rows.append(row)
    return rows


def label(setting: dict[str, str], skip: str | None = None) -> str:
    """'model.dropout=0.5 optimizer.lr=0.1' (less the key SKIP), or 'all' for a sweep of seeds only."""
    return " ".join(f"{k}={v}" for k, v in setting.items() if k != skip) or "all"


def pick_baseline(rows: Sequence[Row], wanted: dict[str, str] | None) -> Row | None:
    """The row WANTED (--baseline) names (UserError unless exactly one), else the best mean COMPARED."""
    if not wanted:
        scored = [r for r in rows if r.mean.get(COMPARED) is not None]
        return max(scored, key=lambda r: r.mean[COMPARED]) if scored else None
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


def pairing_problem(row: Row, baseline: Row) -> str | None:
    """Why ROW cannot be paired by seed with BASELINE (the SHAPE_KEYS/ORDER_KEYS they differ in), or None."""
    def values(r: Row, key: str) -> set[str | None]:
        return {shape_of(j, key) for j in r.jobs if j.ok}

    differ = [f"{k} {'/'.join(sorted(map(str, values(row, k))))} vs {'/'.join(sorted(map(str, values(baseline, k))))}"
              for k in (*SHAPE_KEYS, *ORDER_KEYS) if values(row, k) != values(baseline, k)]
    return ", ".join(differ[:3]) + (", ..." if len(differ) > 3 else "") if differ else None


def compare_to(rows: Sequence[Row], baseline: Row | None, min_effect: float | None = None) -> None:
    """Each row's difference to BASELINE in COMPARED: Welch's, paired by seed where valid, and the seeds needed."""
    for row in rows:
        row.diff = row.paired = row.seeds_needed = None
        if baseline is None or row is baseline:
            continue
        row.diff = welch(row.values(COMPARED), baseline.values(COMPARED))
        mine, theirs = row.by_seed(COMPARED), baseline.by_seed(COMPARED)
        problem = pairing_problem(row, baseline) if row.n["ok"] and baseline.n["ok"] else None
        row.paired = Difference(None, note=f"not paired: differs in {problem}") if problem else paired(mine, theirs)
        row.seeds_needed, row.needed_note = seeds_for(mine, theirs, row.paired.tested, min_effect)


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


def diff_cells(row: Row, baseline: Row | None, d: Difference | None) -> list[str]:
    """Δ, 95 % CI and p of D (ROW's Welch or paired difference); '-' where there are too few seeds to say."""
    if row is baseline:
        return ["baseline", "", ""]
    if baseline is None or d is None or d.diff is None:
        return ["-", "-", "-"]
    if not d.tested:
        return [f"{d.diff:+.4f}", "-", "-"]
    return [f"{d.diff:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]", f"{d.p:.3g}"]


def markdown_table(rows: Sequence[Row], keys: Sequence[str], baseline: Row | None = None) -> str:
    """The report's table: one line per setting, with its difference to the baseline."""
    head = [*(keys or ["setting"]), "seeds", *METRICS[:2], f"Δ {COMPARED}", f"{CONFIDENCE:.0%} CI", "p (Welch)",
            "Δ paired", f"{CONFIDENCE:.0%} CI paired", "p (paired)", "seeds needed", "still improving", *SIZE,
            "epochs", "wall_time_s (this machine)", "jobs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [*(row.setting.values() if keys else ["all"]), str(row.n["ok"])]
        cells += [fmt(row.mean[m], row.std[m], DIGITS[m]) for m in METRICS[:2]]
        cells += diff_cells(row, baseline, row.diff) + diff_cells(row, baseline, row.paired)
        cells.append("" if row is baseline else "-" if row.seeds_needed is None else str(row.seeds_needed))
        cells.append({True: "**still improving: compare with care**", False: "no", None: "-"}[row.improving])
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
    facts = [f"{name} {value}" for name, key in (("dataset", "dataset"), ("max epochs", "max_epochs"), ("code", "code"))
             if (value := _shared(jobs, key)) is not None]
    lines = [f"- **Compared**: {', '.join(keys) or 'nothing but the seed'}; over seeds {', '.join(seeds) or '-'}",
             f"- **Fixed**: {'; '.join(facts) or '-'}",
             f"- **Images**: {_shared(jobs, 'images') or 'not recorded (runs without data/*_size in metrics.json)'}"]
    if fixed:
        lines.append("- **Common overrides**: " + " ".join(f"`{k}={v}`" for k, v in fixed.items()))
    lines.append("- **Wall time** (`wall_time_s`): measured on this machine under its load at the time; a record, "
                 "not compared between settings")
    if baseline is not None:
        how = "--baseline" if chosen else f"the best mean {COMPARED}; choose with --baseline KEY=VALUE"
        lines.append(f"- **Baseline**: {label(baseline.setting)} ({how})")
    return lines


def fixed_settings(jobs: Sequence[Job], keys: Sequence[str]) -> list[str]:
    """Every config key that all jobs share, with its value (a collapsed block of report.md)."""
    configs = [j.config for j in jobs if j.config]
    if not configs:
        return []
    shared = {k: v for k, v in configs[0].items() if k not in keys and k != SEED
              and all(k in c and c[k] == v for c in configs[1:])}
    return [f"<details><summary>Every fixed setting ({len(shared)} config keys all jobs share)</summary>", "",
            "```", *(f"{k}: {v}" for k, v in sorted(shared.items())), "```", "", "</details>"]


def note_lines(rows: Sequence[Row], baseline: Row | None, min_effect: float | None = None) -> list[str]:
    """How to read Δ, CI and p (Welch's and paired), seeds needed and still improving; each setting's notes."""
    if baseline is None:
        return []
    min_effect_text = f"--min-effect {min_effect:g}" if min_effect else "the observed difference (or --min-effect)"
    lines = [f"Δ {COMPARED}: a setting's mean minus the baseline's; {CONFIDENCE:.0%} CI of that difference and "
             "the p-value of Welch's t-test over seeds (scipy.stats.ttest_ind, equal_var=False). A CI that "
             "holds 0 (a large p) means the seeds cannot tell the setting from the baseline.",
             "",
             "Δ paired: the mean over the seeds that a setting shares with the baseline of (setting - baseline) of "
             "each seed, its CI and the paired t-test (scipy.stats.ttest_rel); blank below 2 shared seeds. Pairing "
             "is valid when a seed gives both the same initial weights and the same data order: same model shape "
             "and data (dataset, split, val_size, width, ...), init and batch size; a setting that differs from "
             "the baseline in one of these is not paired (the note below says in what).",
             "",
             f"seeds needed: completed seeds per setting for {POWER:.0%} power in a two-sided test at alpha "
             f"{ALPHA:g} (paired where paired, else Welch's) at {min_effect_text}, with the observed seed-to-seed "
             "spread.",
             "",
             f"still improving: the mean {CONVERGENCE} over seeds reached a new best in the last 20 % of the "
             "epochs (at least 2): the setting had not converged, so its difference may be one of speed, not of "
             "end result; compare with care."]
    notes = [f"- {label(r.setting)}: {note}" for r in rows
             for note in (r.diff.note if r.diff else "", r.paired.note if r.paired else "",
                          f"seeds needed: {r.needed_note}" if r.needed_note and r.diff else "") if note]
    if notes:
        lines += ["", "Read with care (add seeds, e.g. `seed=1,2,3,4,5`):", "", *notes]
    return lines


def section(jobs: Sequence[Job], rows: Sequence[Row], keys: Sequence[str], fixed: dict[str, str],
            baseline: Row | None, chosen: bool, duplicates: Sequence[str] = (), min_effect: float | None = None
            ) -> list[str]:
    """A sweep's header, table, notes, problems and changed jobs (report.md; one per sweep with --compare)."""
    n = tally(jobs)
    not_used = f", {n['rejected']} not used (see below)" if n["rejected"] else ""
    lines = [
        *header_lines(jobs, keys, fixed, baseline, chosen),
        "",
        *fixed_settings(jobs, keys),
        "",
        f"{len(jobs)} jobs: {n['ok']} completed, {n['failed']} failed, {n['incomplete']} incomplete{not_used}. "
        f"Swept: {', '.join(keys) or 'nothing but the seed'}; each cell is mean ± std (sample) over the seeds of "
        "the completed jobs; `seeds` counts them.",
        "",
        markdown_table(rows, keys, baseline),
    ]
    notes = note_lines(rows, baseline, min_effect)
    if notes:
        lines += ["", *notes]
    not_ok = [(j, f"- `{j.name}`: **{j.status}**" + (f": {j.error}" if j.error else "")) for j in jobs if not j.ok]
    blocks = [
        ("### Not used: values the report cannot trust",
         "Completed, but with a metric that is missing, not a finite number or out of its range, an unreadable "
         "metrics.json, or another dataset or model shape than the rest of the setting: left out of every mean, "
         "test and plot.", [line for j, line in not_ok if j.status == REJECTED]),
        ("### Failed or incomplete jobs", "", [line for j, line in not_ok if j.status != REJECTED]),
        ("### Changed after the sweep",
         "Resumed or extended by hand (their .hydra/overrides.yaml differs from the sweep's); each stays in the row "
         "of the setting it was launched with, its metrics are those it ended with.",
         [f"- `{j.name}`: " + ", ".join(f"{k} {v}" for k, v in j.changed.items()) for j in jobs if j.changed]),
        ("### Duplicates", "Job dirs with the same setting and seed (e.g. a sweep launched twice into new dirs) are "
         "one run: the completed one counts, once.", [f"- {d}" for d in duplicates]),
    ]
    for heading, intro, bullets in blocks:
        if bullets:
            lines += ["", heading, "", *([intro, ""] if intro else []), *bullets]
    return lines


def write_markdown(path: Path, title: str, lines: Sequence[str]) -> Path:
    """report.md: its title, then LINES (a sweep's `section` and plots, or several sweeps side by side)."""
    return atomic_write(path, "\n".join([f"# Ablation report: {title}", "", *lines]) + "\n")


def write_csv(path: Path, parts: Sequence[tuple[str | None, Sequence[Row], Sequence[str], Row | None]]) -> Path:
    """report.csv: the table, mean and std in columns of their own; PARTS: (sweep, rows, keys, baseline) per sweep,
    the sweep's name first with --compare (None: one sweep), every part's keys as columns; written whole, at once."""
    diff_cols = ["is_baseline", f"{COMPARED}_diff", "ci_low", "ci_high", "p_welch", "note", "diff_paired",
                 "ci_low_paired", "ci_high_paired", "p_paired", "note_paired", "seeds_needed", "still_improving"]
    keys = list(dict.fromkeys(k for _, _, part_keys, _ in parts for k in part_keys))
    named = parts[0][0] is not None
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([*(["sweep"] if named else []), *keys, "n_seeds", "n_jobs", "n_failed", "n_incomplete",
                     "n_changed", "seeds", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), *SIZE,
                     *diff_cols, "n_rejected"])
    for sweep, rows, _, baseline in parts:
        for row in rows:
            n, d, pd = row.n, row.diff or Difference(None), row.paired or Difference(None)
            seeds = " ".join(j.overrides.get(SEED, "") for j in row.jobs if j.ok)
            writer.writerow([*([sweep] if named else []), *(row.setting.get(k, "") for k in keys), n["ok"],
                             len(row.jobs), n["failed"], n["incomplete"], n["changed"], seeds,
                             *(_num(v) for m in METRICS for v in (row.mean[m], row.std[m])),
                             *(_int(row.mean[m]) for m in SIZE), int(row is baseline),
                             *(_num(v) for v in (d.diff, d.low, d.high, d.p)), d.note,
                             *(_num(v) for v in (pd.diff, pd.low, pd.high, pd.p)), pd.note,
                             _int(row.seeds_needed), "" if row.improving is None else str(row.improving).lower(),
                             n["rejected"]])
    return atomic_write(path, text.getvalue())


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _int(value: float | None) -> str:
    return "" if value is None else str(int(value))
