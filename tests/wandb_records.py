"""Read a W&B offline run file (run-*.wandb) without the network: the records the W&B service wrote.

The file is a LevelDB-style log (the format W&B has used since 2020): a 7-byte header, then 32 KiB blocks
of chunks `crc32 (4) | length (2) | type (1) | payload`, where a record is one FULL chunk or FIRST,
MIDDLE..., LAST chunks, and each record is a serialised `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(data: bytes) -> list[bytes]:
    """The records' bytes, chunks joined."""
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += left
            continue
        if pos + HEADER + length > len(data):  # cut short: W&B's service died while writing it
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


@dataclass
class MetricDef:
    """A define_metric record: NAME (or a glob) charted against STEP_METRIC; SUMMARY: the aggregates kept."""

    name: str
    glob: bool
    step_metric: str
    summary: set[str]
    hidden: bool


@dataclass
class Artifact:
    """An artifact record: NAME of TYPE, its ALIASES, the files of its manifest, its metadata."""

    name: str
    type: str
    aliases: list[str]
    files: list[str]
    metadata: dict[str, Any]


@dataclass
class OfflineRun:
    """What a test needs from an offline run: identity, grouping, config, the logged rows, the metric
    definitions, the summary and the exit code."""

    run_id: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None  # None: the run was never finished
    history: list[dict[str, Any]] = field(default_factory=list)  # the logged rows (run.log), in order
    sweep_id: str = ""
    metrics: dict[str, MetricDef] = field(default_factory=dict)  # define_metric records by name (or glob)
    summary: dict[str, Any] = field(default_factory=dict)  # the summary updates, merged in order
    project: str = ""
    notes: str = ""
    artifacts: list[Artifact] = field(default_factory=list)  # log_artifact records, in order
    used: list[Artifact] = field(default_factory=list)  # use_artifact records (an input of this run)


def read_offline_run(path: Path) -> OfflineRun:
    """Parse one run-*.wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    run = OfflineRun()
    for payload in payloads(data):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group, run.name = rec.run.run_id, rec.run.run_group, rec.run.display_name
            run.job_type, run.tags, run.sweep_id = rec.run.job_type, list(rec.run.tags), rec.run.sweep_id
            run.project, run.notes = rec.run.project, rec.run.notes
            run.config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            run.config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
        elif kind == "metric":
            metric = _metric(rec.metric)
            run.metrics[metric.name] = metric
        elif kind == "summary":
            run.summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
            for item in rec.summary.remove:
                run.summary.pop(item.key or "/".join(item.nested_key), None)
        elif kind == "artifact":
            art = rec.artifact
            files, metadata = [e.path for e in art.manifest.contents], json.loads(art.metadata or "{}")
            run.artifacts.append(Artifact(art.name, art.type, list(art.aliases), files, metadata))
        elif kind == "use_artifact":
            use = rec.use_artifact
            run.used.append(Artifact(use.name, use.type, [], [], {}))
        elif kind == "history":
            run.history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return run


def _metric(rec: Any) -> MetricDef:
    summary = {op for op in ("min", "max", "mean", "best", "last", "none", "copy", "first") if getattr(rec.summary, op)}
    return MetricDef(name=rec.name or rec.glob_name, glob=bool(rec.glob_name), step_metric=rec.step_metric,
                     summary=summary, hidden=rec.options.hidden)


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every offline run under RUN_DIR/wandb/."""
    return [read_offline_run(f) for f in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))]


def epoch_metrics(runs: list[OfflineRun], keys: tuple[str, ...]) -> dict[int, dict[str, list[Any]]]:
    """{epoch: {key: every value logged for it}} over RUNS (e.g. the segments of a resumed run), for the
    rows that hold one of KEYS (Lightning adds `epoch` to each row it logs)."""
    out: dict[int, dict[str, list[Any]]] = {}
    for run in runs:
        for row in run.history:
            for key in keys:
                if key in row and "epoch" in row:
                    out.setdefault(int(row["epoch"]), {}).setdefault(key, []).append(row[key])
    return out
