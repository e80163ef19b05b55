"""RUN_DIR/checkpoints/best.ckpt and last.ckpt, with paths that follow the run dir when it moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from nin_lightning.rundir.layout import BEST_CKPT, LAST_CKPT, checkpoint_dir

_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RelocatableCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose state, saved with absolute paths, is rebased onto this run dir on load.

    Lightning keeps `dirpath` and `best_model_path` as absolute paths in the checkpoint. After a run dir is
    moved or copied, it would warn that `dirpath has changed`, forget the best score (so a worse epoch
    overwrites best.ckpt) and test the best.ckpt of the OLD path. Here every saved path inside the old
    checkpoint dir is read as the same file inside this one, so a run dir holds no path outside it.
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key, so checkpoints written before this class existed restore into it
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:

            def here(path: Any) -> Any:
                if isinstance(path, str) and path and Path(path).parent == Path(old):
                    return str(Path(self.dirpath) / Path(path).name)
                return path

            state_dict = {**state_dict, "dirpath": self.dirpath, **{k: here(state_dict.get(k)) for k in _PATH_KEYS
                                                                    if k in state_dict}}
            state_dict["best_k_models"] = {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
        super().load_state_dict(state_dict)


def checkpoint_callbacks(run_dir: Path, monitor: str, mode: str, save_last: bool) -> list[ModelCheckpoint]:
    """best.ckpt by `monitor`; last.ckpt after EVERY epoch (for resume=auto).

    last.ckpt is not ModelCheckpoint(save_last=True): Lightning 2.6 writes that one only in epochs where
    the monitored metric improved (i.e. a copy of best.ckpt)."""
    dirpath = checkpoint_dir(run_dir)
    best = RelocatableCheckpoint(dirpath=dirpath, filename=Path(BEST_CKPT).stem, monitor=monitor, mode=mode,
                                 save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    if not save_last:
        return [best]
    last = RelocatableCheckpoint(dirpath=dirpath, filename=Path(LAST_CKPT).stem, monitor=None, save_top_k=1,
                                 enable_version_counter=False)
    return [best, last]
