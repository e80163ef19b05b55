"""A sweep group's W&B report: its spec (JSON in W&B's column names, `summary:test/acc`) and the Report built."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nin_lightning import metric_names as names
from nin_lightning.errors import UserError

SPEC_FILE = "wandb_report.json"
SEED = "seed"
OBJECTIVE = names.acc(names.TEST)  # the parallel coordinates' last axis and the bar chart's metric
CURVES = ((names.loss(names.VAL),), (names.acc(names.TRAIN), names.acc(names.VAL)))  # each against names.EPOCH
TABLE_SUMMARY = ("status", OBJECTIVE, names.VAL_ACC_BEST, names.BEST_EPOCH, "params", "macs", "wall_time_s")
AGGREGATE, SPREAD = "mean", "stddev"  # the bands and bars: mean ± std over the seeds of a setting


def build_spec(entity: str, project: str, group: str, swept: Sequence[str], config_keys: Iterable[str]) -> dict:
    """The report of GROUP in ENTITY/PROJECT, whose runs swept SWEPT and have CONFIG_KEYS (flat, dotted)."""
    keys = set(config_keys)
    # a swept key's config column: the key itself, Hydra's choice of a config group (`choices.KEY`) or its `.name`
    found = {key: next((c for c in (key, f"choices.{key}", f"{key}.name") if c in keys), None) for key in swept}
    columns = {key: f"config:{column}" for key, column in found.items() if column is not None}
    settings = [columns[key] for key in swept if key != SEED and key in columns]
    panels: list[dict[str, Any]] = [{
        "kind": "parallel_coordinates", "title": f"{OBJECTIVE} by setting",
        "columns": [*columns.values(), f"summary:{OBJECTIVE}"],
    }]
    panels += [{"kind": "line", "title": f"{' and '.join(curve)} by {column.split(':', 1)[1]} (mean ± std over seeds)",
                "x": names.EPOCH, "y": list(curve), "groupby": column, "aggregate": AGGREGATE, "range": SPREAD}
               for column in settings for curve in CURVES]
    panels.append({"kind": "bar", "title": f"{OBJECTIVE} per setting (mean ± std over seeds)",
                   "metrics": [OBJECTIVE], "groupby": settings, "aggregate": AGGREGATE, "range": SPREAD})
    panels.append({"kind": "runs_table",
                   "columns": ["run:displayName", *columns.values(), *(f"summary:{k}" for k in TABLE_SUMMARY)]})
    return {"entity": entity, "project": project, "group": group, "title": f"Ablation: {group}"[:128],
            "filters": {"group": group}, "swept": list(swept),
            "not_in_config": [key for key in swept if key not in columns], "panels": panels}


def write_spec(path: Path, spec: dict) -> Path:
    """The spec as JSON (`--publish` later builds the same report from the runs)."""
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def _metric(column: str) -> Any:
    """'config:model.dropout' -> wr.Config('model.dropout'); 'summary:test/acc' -> wr.SummaryMetric(...)."""
    import wandb_workspaces.reports.v2 as wr

    section, name = column.split(":", 1)
    return wr.Config(name) if section == "config" else wr.SummaryMetric(name)


def _accessor(column: str) -> str:
    """A runs-table column: config:model.value.dropout (W&B keeps a config key's value under .value)."""
    section, name = column.split(":", 1)
    if section != "config":
        return column
    head, _, rest = name.partition(".")
    return f"config:{head}.value" + (f".{rest}" if rest else "")


def to_report(spec: dict) -> Any:
    """The wandb-workspaces Report of SPEC (built offline; `.save()` publishes it)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    def runset(name: str, **kwargs: Any) -> Any:
        return wr.Runset(entity=spec["entity"], project=spec["project"], name=name,
                         filters=[expr.Metric("Group") == spec["filters"]["group"]], **kwargs)

    runs_panels: list[Any] = []
    table: list[str] = []
    bars: list[Any] = []
    for p in spec["panels"]:
        if p["kind"] == "parallel_coordinates":
            runs_panels.append(wr.ParallelCoordinatesPlot(
                title=p["title"], columns=[wr.ParallelCoordinatesPlotColumn(metric=_metric(c)) for c in p["columns"]]))
        elif p["kind"] == "line":
            runs_panels.append(wr.LinePlot(title=p["title"], x=p["x"], y=p["y"], groupby=_metric(p["groupby"]),
                                           groupby_aggfunc=p["aggregate"], groupby_rangefunc=p["range"]))
        elif p["kind"] == "runs_table":
            table += [_accessor(c) for c in p["columns"]]
        else:  # bar: the runs grouped by every swept setting, one bar (mean ± std over seeds) per setting
            groupby = [f"config.{column.split(':', 1)[1]}" for column in p["groupby"]]
            bars.append(wr.PanelGrid(runsets=[runset("settings", groupby=groupby)], panels=[
                wr.BarPlot(title=p["title"], metrics=p["metrics"], groupby_aggfunc=p["aggregate"],
                           groupby_rangefunc=p["range"])]))
    blocks = [wr.P(f"The runs of group {spec['group']}: swept {', '.join(spec['swept'])}."),
              wr.PanelGrid(runsets=[runset("runs", pinned_columns=table)], panels=runs_panels), *bars]
    return wr.Report(entity=spec["entity"], project=spec["project"], title=spec["title"], blocks=blocks)


def check_login() -> None:
    """A one-line UserError unless W&B has an API key (WANDB_API_KEY or `wandb login`)."""
    import wandb

    try:
        wandb.Api()  # reads the API key; raises without one (before any request)
    except wandb.errors.UsageError as exc:
        raise UserError("W&B: --publish needs a login; run `wandb login` (or set WANDB_API_KEY), or leave out "
                        f"--publish to write the report's spec ({SPEC_FILE}) only") from exc


def publish(spec: dict) -> str:
    """Save SPEC's report to W&B and return its URL (check_login first)."""
    try:
        report = to_report(spec).save()
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise UserError(f"W&B: publishing the report to {spec['entity']}/{spec['project']} failed "
                        f"({type(exc).__name__}: {text}); check --wandb ENTITY/PROJECT and `wandb login`") from exc
    return str(report.url)
