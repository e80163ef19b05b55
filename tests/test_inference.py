"""Using what was trained: load a checkpoint without Hydra, evaluate, predict and export a run.

The session's digits run (tests/conftest.py `trained_run`), copied once, is shared by the whole module; the
commands run as users run them (`python -m nin_lightning.evaluate ...` in a subprocess), and each of the
issue's error cases is checked for its one line naming the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, cli_env, copy_run, error_lines, read_metrics

pytestmark = pytest.mark.slow
LEGACY_RUN = ROOT / "tests" / "data" / "legacy_run"  # written by the code before checkpoints held hyperparameters
OUTPUT_DIRS = ("eval", "predictions", "export")  # what the commands add to a run dir, beside its own files


def run_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m nin_lightning.MODULE ARGS...` as a user runs it."""
    return subprocess.run([sys.executable, "-m", f"nin_lightning.{module}", *args], cwd=cwd, env=cli_env(cwd),
                          capture_output=True, text=True, timeout=600)


def run_files(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Every file of the run (not the commands' outputs): its SHA-256 and modification time."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.parts[0] not in OUTPUT_DIRS:
            out[str(rel)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


def digits_test_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits test split as the project's DataModule loads it (uint8 (N, 1, 8, 8), labels)."""
    from nin_lightning.config import DatasetConfig
    from nin_lightning.data.digits import DigitsDataModule

    cfg = DatasetConfig(name="digits", num_classes=10, in_channels=1, image_size=8, preset="mnist", mean=[0.3],
                        std=[0.38])
    _, test = DigitsDataModule(cfg).load()
    return test.images, test.labels


@pytest.fixture(scope="module")
def trained(trained_run, tmp_path_factory) -> Path:
    """The session's digits run (tests/conftest.py: a quickstart at half width, 3 epochs), copied for this
    module: `evaluated` and the commands write their outputs into it."""
    return copy_run(trained_run, tmp_path_factory.mktemp("trained") / "run")


@pytest.fixture(scope="module")
def evaluated(trained) -> dict:
    """`python -m nin_lightning.evaluate RUN_DIR`, once: its output, eval.json, and the run's files before."""
    before = run_files(trained)
    result = run_module("evaluate", str(trained), cwd=trained.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    out = trained / "eval" / "best_test"
    return {"result": result, "before": before, "dir": out, "json": json.loads((out / "eval.json").read_text())}


# ------------------------------------------------------------------------------------------ loading
def test_the_run_learned(trained):
    metrics = read_metrics(trained)
    assert metrics["status"] == "completed" and metrics["test/acc"] >= 0.85, metrics


def test_a_checkpoint_rebuilds_its_model_without_hydra_or_run_dir(trained, tmp_path):
    from nin_lightning.module import NiNClassifier

    alone = tmp_path / "model.ckpt"  # away from its run dir: no .hydra/, no metrics.json
    shutil.copy(trained / "checkpoints" / "best.ckpt", alone)
    checkpoint = torch.load(alone, map_location="cpu", weights_only=True)  # tensors and plain types only
    hparams = checkpoint["hyper_parameters"]
    assert hparams["width"] == 0.5 and hparams["num_classes"] == 10 and hparams["dataset"]["name"] == "digits"
    assert hparams["optimizer"]["name"] == "sgd" and hparams["scheduler"]["name"] == "onecycle"
    model = NiNClassifier.load_from_checkpoint(alone).eval()
    state = model.state_dict()
    assert state.keys() == checkpoint["state_dict"].keys()
    assert all(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items())
    assert model.trained_epochs == checkpoint["epoch"] + 1 and model.run_config == checkpoint["nin_config"]
    images, labels = digits_test_images()
    x = (images.float() / 255 - 0.3) / 0.38  # the digits config's mean and std
    with torch.no_grad():
        acc = float((model.evaluate(x).argmax(1) == labels).float().mean())
    assert acc >= 0.85  # the trained weights, not a fresh init


def test_a_checkpoint_from_before_hyperparameters_were_saved_still_loads(tmp_path):
    from nin_lightning.module import NiNClassifier

    path = LEGACY_RUN / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert "hyper_parameters" not in checkpoint  # really one of the old kind
    model = NiNClassifier.load_from_checkpoint(path)
    assert model.hparams["width"] == 0.25 and model.hparams["dataset"]["name"] == "digits"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in checkpoint["state_dict"].items())
    # its run dir evaluates to the test/acc its own run recorded, to the last bit (same machine kind as CI's)
    run_dir = tmp_path / "legacy_run"
    shutil.copytree(LEGACY_RUN, run_dir)
    result = run_module("evaluate", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((run_dir / "eval" / "best_test" / "eval.json").read_text())
    assert scored["test/acc"] == read_metrics(run_dir)["test/acc"] and scored["same_as_metrics_json"] is True


def test_a_checkpoint_without_hyperparameters_or_config_is_refused_in_one_line(trained, tmp_path):
    from nin_lightning.errors import UserError
    from nin_lightning.module import NiNClassifier

    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    del checkpoint["hyper_parameters"], checkpoint["nin_config"]
    path = tmp_path / "bare.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(UserError, match=r"bare\.ckpt holds neither hyperparameters nor the model config .* pass a "
                                        r"checkpoint that a nin-lightning run wrote"):
        NiNClassifier.load_from_checkpoint(path)


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_reproduces_metrics_json_test_acc_exactly(trained, evaluated):
    scored, metrics = evaluated["json"], read_metrics(trained)
    assert scored["test/acc"] == metrics["test/acc"]  # the same float: same precision, TTA and batches
    assert scored["same_as_metrics_json"] is True and scored["images"] == 360
    assert scored["precision"] == metrics["speed/precision"] and scored["tta"] is False
    assert scored["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)
    assert "test/acc5" not in scored  # 10 classes: training logs no top-5 either
    assert 0 <= scored["test/ece"] <= 1 and scored["test/nll"] > 0
    matrix = np.array(scored["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 360
    assert np.trace(matrix) / 360 == pytest.approx(scored["test/acc"], abs=1e-6)
    per_class = scored["test/acc_per_class"]
    assert list(per_class) == [str(i) for i in range(10)]
    assert per_class["3"] == pytest.approx(matrix[3, 3] / matrix[3].sum(), abs=1e-6)
    assert (evaluated["dir"] / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = evaluated["result"].stdout
    assert f"test/acc {scored['test/acc']:.4f} (metrics.json: {metrics['test/acc']:.4f}, the same)" in out


def test_evaluate_never_changes_the_runs_files(trained, evaluated):
    assert run_files(trained) == evaluated["before"]


def test_evaluate_the_val_split_of_the_last_checkpoint(trained, evaluated):
    result = run_module("evaluate", str(trained), "--ckpt", "last", "--split", "val", "dataset.eval_batch_size=64",
                        cwd=trained.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((trained / "eval" / "last_val" / "eval.json").read_text())
    assert scored["split"] == "val" and scored["images"] == 180 and scored["eval_batch_size"] == 64
    assert scored["checkpoint"] == "checkpoints/last.ckpt" and scored["same_as_metrics_json"] is None
    # last.ckpt is the end of training, whose val/acc history.csv recorded (eval batches of 512 there)
    with (trained / "history.csv").open() as fh:
        last_row = list(csv.DictReader(fh))[-1]
    assert scored["val/acc"] == pytest.approx(float(last_row["val/acc"]), abs=1.5 / 180)


# ------------------------------------------------------------------------------------------ predict
def test_predict_on_pngs_of_the_test_images_gives_evaluations_classes(trained, evaluated, tmp_path):
    from PIL import Image

    images, _ = digits_test_images()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):  # in the test split's order: the same batches as evaluation's
        Image.fromarray(image[0].numpy()).save(folder / f"{i:03d}.png")
    out = tmp_path / "predictions.csv"
    result = run_module("predict", str(trained), str(folder), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with out.open() as fh:
        predicted = list(csv.DictReader(fh))
    with (evaluated["dir"] / "predictions.csv").open() as fh:
        evaluation = list(csv.DictReader(fh))
    assert [Path(r["file"]).name for r in predicted] == [f"{i:03d}.png" for i in range(360)]
    assert [r["top1"] for r in predicted] == [r["predicted"] for r in evaluation]
    assert [float(r["top1_prob"]) for r in predicted] == pytest.approx([float(r["probability"]) for r in evaluation],
                                                                       abs=1e-6)
    assert all(r["converted"] == "" for r in predicted)
    probs = [float(predicted[0][f"top{k}_prob"]) for k in range(1, 6)]
    assert probs == sorted(probs, reverse=True) and "top1_name" not in predicted[0]  # digits: the label is the name
    assert f"{folder / '000.png'}: {predicted[0]['top1']} " in result.stdout
    assert run_files(trained) == evaluated["before"]


def test_predict_converts_colour_and_size_and_says_so(trained, tmp_path):
    from PIL import Image

    from nin_lightning.inference.prediction import read_image

    images, _ = digits_test_images()
    grey = images[0, 0].numpy()
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")  # grey pixels as RGB
    Image.fromarray(grey).resize((16, 24), Image.Resampling.NEAREST).save(tmp_path / "big.jpg", quality=95)
    read = read_image(tmp_path / "rgb.png", channels=1, size=8)
    assert read.converted == "RGB->L" and np.array_equal(read.pixels[0], grey)  # luma of R=G=B is the grey value
    out = tmp_path / "p.csv"
    result = run_module("predict", str(trained), str(tmp_path / "rgb.png"), str(tmp_path / "big.jpg"), "--top", "2",
                        "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["converted"] for r in rows] == ["RGB->L", "16x24->8x8 (centre crop)"]
    assert set(rows[0]) == {"file", "top1", "top1_prob", "top2", "top2_prob", "converted"}
    assert "2 of 2 images converted to the run's 1x8x8 input" in result.stdout


def test_predict_names_the_classes_where_the_dataset_has_them(trained):
    from nin_lightning.inference.loading import load_run
    from nin_lightning.inference.prediction import Prediction, csv_text, line

    run = load_run(trained)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    run.model.hparams["class_names"] = names  # as CIFAR's checkpoints carry them (test_class_names_...)
    text = csv_text(run, [Prediction(Path("a.png"), [3, 8], [0.9, 0.05], "")])
    assert text.splitlines() == ["file,top1,top1_name,top1_prob,top2,top2_name,top2_prob,converted",
                                 "a.png,3,three,0.900000,8,eight,0.050000,"]
    assert line(run, Prediction(Path("a.png"), [3], [0.9], "")) == "a.png: three 0.900"


def test_class_names_come_from_cifars_files_into_the_checkpoint(tmp_path, compose_cfg, monkeypatch):
    import pickle

    from nin_lightning import speed
    from nin_lightning.config import validate
    from nin_lightning.data import build_datamodule
    from nin_lightning.run import build_model
    from tests import fake_data

    fake_data.write_cifar10(tmp_path, per_batch=4, n_test=10)
    fake_data.trust_fake_md5(monkeypatch, tmp_path)
    conf = validate(compose_cfg("dataset=cifar10", f"dataset.root={tmp_path}", "dataset.val_size=5"))
    datamodule = build_datamodule(conf.dataset)
    datamodule.setup("fit")
    meta = pickle.loads((tmp_path / "cifar-10-batches-py" / "batches.meta").read_bytes())
    assert datamodule.class_names == meta["label_names"] and len(set(meta["label_names"])) == 10
    model = build_model(conf, speed.resolve(conf), class_names=datamodule.class_names)
    assert model.hparams["class_names"] == meta["label_names"]  # saved in every checkpoint of the run


# ------------------------------------------------------------------------------------------- export
def test_export_onnx_matches_pytorch_within_the_tolerance(trained, evaluated, tmp_path):
    import onnxruntime

    from nin_lightning.inference.onnx_export import ONNX_TOLERANCE
    from nin_lightning.module import NiNClassifier

    result = run_module("export", str(trained), "--format", "onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    model_path = trained / "export" / "best.onnx"
    meta = json.loads((trained / "export" / "best.preprocessing.json").read_text())
    diff = meta["check"]["max_abs_diff"]
    assert 0 <= diff <= ONNX_TOLERANCE and meta["check"]["images"] == 64
    assert f"max |ONNX - PyTorch| = {diff:.3g} on the logits of 64 test images" in result.stdout
    assert meta["input"]["shape"] == ["batch", 1, 8, 8] and meta["preprocessing"]["mean"] == [0.3]
    assert meta["class_names"] == [str(i) for i in range(10)]
    # as a user of the file would: onnxruntime on 7 images (not 64: the batch axis is dynamic), normalised from
    # the recorded preprocessing, against PyTorch's fp32 logits of the checkpoint
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)
    images, labels = digits_test_images()
    pre = meta["preprocessing"]
    x = ((images.numpy().astype(np.float32) / 255 - np.float32(pre["mean"][0])) / np.float32(pre["std"][0]))
    [logits] = session.run(None, {meta["input"]["name"]: x[:7]})
    net = NiNClassifier.load_from_checkpoint(trained / "checkpoints" / "best.ckpt", channels_last=False).net.eval()
    with torch.no_grad():
        reference = net(torch.from_numpy(x[:7])).numpy()
    assert np.abs(logits - reference).max() <= ONNX_TOLERANCE
    [all_logits] = session.run(None, {"images": x})
    onnx_acc = float((all_logits.argmax(1) == labels.numpy()).mean())
    assert onnx_acc == pytest.approx(evaluated["json"]["test/acc"], abs=3 / 360)  # fp32 here, bf16 in the run's test
    assert run_files(trained) == evaluated["before"]


# ------------------------------------------------------------------------------------------- errors
def one_line(module: str, argv: list[str], capsys) -> str:
    """Run the command's main in this process as `python -m` runs it; its one stderr line."""
    import importlib

    from nin_lightning.cli.errors import one_line_errors

    main = importlib.import_module(f"nin_lightning.{module}").main
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(partial(main, argv))
    assert exit_info.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def copy_of(trained, tmp_path):
    """A copy of the trained run dir (to break), without the commands' outputs."""
    run_dir = tmp_path / "copy"
    shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns(*OUTPUT_DIRS))
    return run_dir


def test_a_missing_run_dir_is_one_line_through_the_real_command(tmp_path):
    result = run_module("evaluate", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert lines == [f"error: {tmp_path / 'nope'}: no such directory; pass a run dir (the hydra.run.dir of a "
                     "training run, e.g. outputs/runs/<time>)"]


def test_a_corrupt_checkpoint_names_the_file(copy_of, capsys):
    best = copy_of / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:5000])  # cut short, as by a full disk or a broken copy
    line = one_line("evaluate", [str(copy_of)], capsys)
    assert f"checkpoint {best} is truncated or corrupt" in line and "pass a checkpoint that a nin-lightning" in line


def test_a_foreign_checkpoint_is_never_unpickled(copy_of, capsys):
    torch.save({"state_dict": {}, "model": torch.nn.Linear(2, 2)}, copy_of / "checkpoints" / "best.ckpt")
    line = one_line("predict", [str(copy_of), str(copy_of)], capsys)
    assert "best.ckpt holds Python objects besides tensors" in line and "refusing to unpickle" in line


def test_a_checkpoint_whose_weights_do_not_fit_names_the_file(copy_of, capsys):
    path = copy_of / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["width"] = 1.0  # another NiN than the weights are for
    torch.save(checkpoint, path)
    line = one_line("export", [str(copy_of)], capsys)
    assert f"{path}: its weights do not fit the NiN its hyperparameters describe" in line
    assert "size mismatch" in line and "pass a checkpoint that a nin-lightning run wrote" in line


@pytest.mark.parametrize(("setup", "argv", "expected"), [
    ("empty", [], "has no checkpoints/best.ckpt; its run stopped before its first epoch ended, or it is not a run "
                  "dir"),
    ("best only", ["--ckpt", "last"], "has no checkpoints/last.ckpt; pass --ckpt best"),
    ("sweep", [], "has no checkpoints/best.ckpt; it is a sweep dir: pass one of its jobs' dirs"),
])
def test_a_run_dir_without_the_checkpoint_says_what_to_do(copy_of, tmp_path, capsys, setup, argv, expected):
    run_dir = copy_of
    if setup == "empty":
        run_dir = tmp_path / "empty"
        run_dir.mkdir()
    elif setup == "best only":
        (copy_of / "checkpoints" / "last.ckpt").unlink()
    else:
        run_dir = tmp_path / "sweep"
        run_dir.mkdir()
        shutil.move(copy_of, run_dir / "0_job")
    line = one_line("evaluate", [str(run_dir), *argv], capsys)
    assert line.startswith(f"error: {run_dir} ") and expected in line


def test_a_checkpoint_of_another_dataset_than_its_run_dir_is_refused(copy_of, capsys):
    config = copy_of / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("name: digits", "name: mnist").replace("image_size: 8",
                                                                                        "image_size: 28"))
    line = one_line("evaluate", [str(copy_of)], capsys)
    assert f"{copy_of / 'checkpoints' / 'best.ckpt'} was trained with dataset.name='digits'" in line
    assert "config.yaml says 'mnist': the checkpoint belongs to another run" in line


def test_an_unreadable_image_names_the_file(trained, tmp_path, capsys):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature and nothing readable after it
    line = one_line("predict", [str(trained), str(bad)], capsys)
    assert line.startswith(f"error: {bad}: not a readable PNG or JPEG image (") and "replace it or leave it" in line
    deep = tmp_path / "deep.png"
    Image.fromarray(np.zeros((8, 8), np.uint16) + 4000).save(deep)  # 16-bit grey
    line = one_line("predict", [str(trained), str(deep)], capsys)
    assert line.startswith(f"error: {deep}: its pixels are I;16") and "save it as an 8-bit PNG or JPEG" in line
    empty = tmp_path / "no_images"
    empty.mkdir()
    line = one_line("predict", [str(trained), str(empty)], capsys)
    assert line.startswith(f"error: {empty}: no PNG or JPEG files in it")


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A real SIDE x SIDE one-bit PNG of one colour (Pillow's default limit refuses 20000 x 20000 = 4e8 pixels),
    written row by row: ~50 MB of zero rows compress to a few tens of KB, nothing that size is ever held."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_predict_skips_a_decompression_bomb_and_unreadable_images_naming_each(trained, tmp_path):
    """Issue 22's trial: a 20000x20000 PNG stopped `predict` with Pillow's DecompressionBombError, naming neither
    the file nor the fix. Now each bad file is one line naming it, the others are predicted, and the count of
    skipped files is said; the CSV holds the good ones."""
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bomb = bomb_png(tmp_path / "bomb.png")
    warned = bomb_png(tmp_path / "warned.png", side=10000)  # 1e8 pixels: Pillow only warns, and would decode it
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "p.csv"
    result = run_module("predict", str(trained), str(bomb), str(good), str(warned), str(bad), "--out", str(out),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(ln.startswith(f"[nin] skipped {bomb}: too many pixels to decode safely") and "shrink it" in ln
               for ln in lines), lines
    assert any(ln.startswith(f"[nin] skipped {warned}: too many pixels to decode safely") for ln in lines), lines
    assert any(ln.startswith(f"[nin] skipped {bad}: not a readable PNG or JPEG image") for ln in lines), lines
    assert "[nin] skipped 3 of 4 images (each is named above); predicted the other 1" in lines
    with out.open() as fh:
        assert [row["file"] for row in csv.DictReader(fh)] == [str(good)]


def test_evaluate_into_a_read_only_run_dir_fails_before_computing_and_names_out(trained, tmp_path):
    """Issue 22: `evaluate` on a read-only run dir computed everything, then failed with a hint naming
    hydra.run.dir. Now it stops before the evaluation, and the fix is --out."""
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)]).returncode:
        pytest.skip("needs root to mount a read-only tmpfs")
    try:
        shutil.copytree(trained, disk / "run", ignore=shutil.ignore_patterns(*OUTPUT_DIRS))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        result = run_module("evaluate", str(disk / "run"), cwd=tmp_path)
        image = tmp_path / "zero.png"
        from PIL import Image

        Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
        others = {"FILE.csv": run_module("predict", str(disk / "run"), str(image), cwd=tmp_path),
                  "FILE.onnx": run_module("export", str(disk / "run"), cwd=tmp_path)}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    lines = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"error: cannot write {disk / 'run' / 'eval' / 'best_test'}: {disk / 'run'} is "
                               "read-only") and lines[0].endswith("pass --out DIR (somewhere you can write)"), lines
    assert "top-1" not in result.stdout.lower() and "acc" not in result.stdout, result.stdout  # nothing computed
    for example, other in others.items():  # predict and export: the same, before any work
        lines = [ln for ln in error_lines(other.stderr) if ln.startswith("error:")]
        assert other.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cannot write "), other.stderr
        assert lines[0].endswith(f"pass --out {example} (somewhere you can write)") and not other.stdout.strip(), lines


@pytest.mark.parametrize(("argv", "expected"), [
    (["model.width=2"], "model.width=2: the model is the one its checkpoint holds, so model keys cannot change; "
                        "drop it"),
    (["dataset.val_size=10"], "dataset.val_size=10: dataset.val_size decides which images the run's splits hold"),
    (["dataset.batch_size=64"], "dataset.batch_size=64: dataset.batch_size is training's; these commands batch by "
                                "dataset.eval_batch_size=N"),
    (["dataset.eval_batch_size=abc"], "dataset.eval_batch_size=abc: give a whole number"),
    (["dataset.eval_batch_size=0"], "dataset.eval_batch_size=0 is out of range: expected an integer >= 1"),
    (["dataset.num_workers=100000"], "dataset.num_workers=100000 is more than the "),
    (["--tta", "on"], "--tta on: digits holds digits, which a mirror image turns into other digits or none; use "
                      "--tta off"),
    (["--split", "train"], "argument --split: invalid choice: 'train'"),
])
def test_bad_options_are_one_line(trained, capsys, argv, expected):
    assert expected in one_line("evaluate", [str(trained), *argv], capsys)


def test_a_file_named_twice_is_predicted_once(tmp_path):
    """By name and inside its folder (and by another spelling of its path): one prediction, in first place."""
    from nin_lightning.inference.prediction import find_images

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")
    given = [tmp_path / "b.png", tmp_path, tmp_path / ".." / tmp_path.name / "a.png"]
    assert find_images(given) == [tmp_path / "b.png", tmp_path / "a.png"]


def test_out_never_overwrites_the_runs_own_files(trained, capsys, tmp_path):
    """`--out RUN_DIR/history.csv` (or metrics.json, a checkpoint) would replace the run's record: refused in
    one line, nothing changed; a file of the wrong kind too."""
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    for command, out, args in (("predict", trained / "history.csv", [str(image)]),
                               ("export", trained / "checkpoints" / "best.onnx", []),
                               ("evaluate", trained / "checkpoints", [])):
        line = one_line(command, [str(trained), *args, "--out", str(out)], capsys)
        assert f"--out {out}: inside the run dir it would overwrite the run's own files" in line
    line = one_line("predict", [str(trained), str(image), "--out", str(tmp_path / "metrics.json")], capsys)
    assert "give a file name ending in .csv" in line
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before


def test_out_of_the_wrong_kind_is_named_and_an_existing_file_is_replaced(trained, capsys, tmp_path):
    """Follow-up of issue 23's adversarial check: `--out` naming an existing file was refused as "read-only" (a
    file has no execute bit) for every command, and export into a directory failed after the work with a temp
    file's name. Now: a file where a dir goes (or the reverse) is named before any work; a file is replaced."""
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    (tmp_path / "old.txt").write_text("mine")
    (tmp_path / "dir.onnx").mkdir()
    assert one_line("evaluate", [str(trained), "--out", str(tmp_path / "old.txt")], capsys).endswith(
        "old.txt is a file; give a directory")
    assert one_line("export", [str(trained), "--out", str(tmp_path / "dir.onnx")], capsys).endswith(
        "dir.onnx is a directory; give a file ending in .onnx")
    assert (tmp_path / "old.txt").read_text() == "mine" and not any((tmp_path / "dir.onnx").iterdir())
    (tmp_path / "ev" / "predictions.csv").mkdir(parents=True)  # one of evaluate's files: refused before any work
    (tmp_path / "ev" / "eval.json").write_text("mine")
    assert "ev/predictions.csv: a directory is in its place; move it, or pass another --out" in one_line(
        "evaluate", [str(trained), "--out", str(tmp_path / "ev")], capsys)
    assert (tmp_path / "ev" / "eval.json").read_text() == "mine"
    assert not (tmp_path / "ev" / "confusion_matrix.png").exists()
    for command in ("evaluate", "export"):  # argparse's list of what is missing: RUN_DIR alone (overrides optional)
        line = one_line(command, [], capsys)
        assert line.endswith(f"required: RUN_DIR; see python -m nin_lightning.{command} --help"), line
    other = tmp_path / "other_run"  # another run's own file: replaced before (the report then read predictions)
    (other / ".hydra").mkdir(parents=True)
    (other / "history.csv").write_text("epoch\n1\n")
    line = one_line("predict", [str(trained), str(image), "--out", str(other / "history.csv")], capsys)
    assert f"inside the run dir it would overwrite the run's own files ({other})" in line, line
    assert (other / "history.csv").read_text() == "epoch\n1\n"
    line = one_line("predict", [str(trained), str(image), "--out", str(tmp_path / "old.txt" / "x.csv")], capsys)
    assert line.endswith("old.txt is a file, not a directory; pass another --out"), line  # was: "is read-only"
    old = tmp_path / "old.csv"
    old.write_text("an earlier prediction\n")
    from nin_lightning.predict import main

    assert main([str(trained), str(image), "--out", str(old)]) == 0
    with old.open() as fh:
        assert [Path(r["file"]).name for r in csv.DictReader(fh)] == ["a.png"]


def test_evaluate_does_not_trust_a_hand_edited_metrics_json(copy_of, tmp_path, capsys):
    """Follow-up of issue 23's adversarial check: metrics.json's test/acc as text crashed evaluate after its work
    (a format error naming no file), as NaN it went into eval.json as `NaN` (not JSON), and a precision that is
    none of Lightning's reached the Trainer. Now they are not used: nothing to compare with, this device's
    precision."""
    from nin_lightning.evaluate import main

    metrics = json.loads((copy_of / "metrics.json").read_text())
    for i, (acc, precision) in enumerate((("0.99", "bogus"), (float("nan"), metrics.get("speed/precision")))):
        (copy_of / "metrics.json").write_text(json.dumps(metrics | {"test/acc": acc, "speed/precision": precision}))
        out = tmp_path / f"eval{i}"
        assert main([str(copy_of), "--out", str(out)]) == 0
        result = json.loads((out / "eval.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert result["metrics.json test/acc"] is None and result["same_as_metrics_json"] is None
        assert result["test/acc"] > 0.5  # the run learned (chance: 0.1)
    assert "Traceback" not in capsys.readouterr().err


def test_predict_reads_a_cameras_jpeg_and_a_file_named_like_an_override(trained, tmp_path, monkeypatch, capsys):
    """Follow-ups of issue 23's adversarial check: a phone's JPEG (Pillow: MPO) was refused as not a JPEG; an
    existing image named `a=b.png` was taken for an override; eval_batch_size=10**23 failed inside a loader."""
    from PIL import Image

    from nin_lightning.predict import main

    monkeypatch.chdir(tmp_path)
    picture = Image.new("RGB", (16, 16), (200, 200, 200))
    picture.save("camera.jpg", format="MPO", save_all=True, append_images=[picture])
    picture.save("a=b.png")
    assert main([str(trained), "camera.jpg", "a=b.png", "--out", "p.csv"]) == 0
    with open("p.csv") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == ["camera.jpg", "a=b.png"]
    line = one_line("evaluate", [str(trained), "dataset.eval_batch_size=" + "9" * 23], capsys)
    assert "dataset.eval_batch_size=" + "9" * 23 + " is out of range: expected an integer below 2**31" in line, line
