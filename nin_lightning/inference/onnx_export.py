"""Export a run's network (fp32, dynamic batch axis) to ONNX with its preprocessing in <name>.preprocessing.json,
written only once onnxruntime's logits match PyTorch's within ONNX_TOLERANCE (docs/using-models.md)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nin_lightning.atomic_files import atomic_write
from nin_lightning.errors import UserError
from nin_lightning.inference.loading import LoadedRun

# Largest |ONNX - PyTorch| accepted on the fp32 logits. Both run fp32 on the CPU; only the order of the float
# sums differs (onnxruntime fuses BatchNorm into the convolutions), which moves logits of magnitude ~10 by
# ~1e-6 (float32's epsilon is 1.2e-7). 1e-4 leaves room for other CPUs' kernels and still catches a wrong op.
ONNX_TOLERANCE = 1e-4
CHECK_IMAGES = 64  # the real batch: the run's first test images
INPUT, OUTPUT = "images", "logits"


def _max_diff(session: Any, x: torch.Tensor, reference: torch.Tensor) -> float:
    [out] = session.run([OUTPUT], {INPUT: x.numpy()})
    return float(np.abs(out - reference.numpy()).max())


def export_onnx(run: LoadedRun, out: Path) -> dict[str, Any]:
    """RUN's network as ONNX at OUT, with its preprocessing beside it: what that file records (`check`: the diff)."""
    import onnxruntime

    dataset = run.dataset
    if dataset.preprocess != "none":
        raise UserError(f"{run.run_dir}: the run whitens its inputs (dataset.preprocess={dataset.preprocess}), which "
                        "mean and std cannot describe, so an exported model would not know its preprocessing; "
                        "export a run trained with dataset.preprocess=none")
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: give a file name ending in .onnx")
    x = run.normalise(run.split("test").images[:CHECK_IMAGES]).float()
    # the network alone, fp32 and NCHW: no TTA, no autocast, no channels_last (a layout, not a result)
    net = copy.deepcopy(run.model.net).float().to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        reference = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(net, (x,), dynamo=True, verbose=False, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    data = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    if isinstance(session.get_inputs()[0].shape[0], int):
        raise UserError(f"{out}: the exported model's batch axis came out fixed; report this with the run's config")
    diff = max(_max_diff(session, x, reference), _max_diff(session, x[:1], reference[:1]))  # also one image: dynamic
    if not diff <= ONNX_TOLERANCE:
        raise UserError(f"{out} not written: onnxruntime's logits differ from PyTorch's by up to {diff:.3g} on "
                        f"{len(x)} test images (tolerance {ONNX_TOLERANCE:g}); check onnxruntime's version")
    channels, classes = int(run.model.hparams["in_channels"]), int(run.model.hparams["num_classes"])
    size = dataset.image_size
    tta_note = "the run's test averaged each image's logits with its mirror's" if run.model.tta else "none"
    record = {
        "model": out.name, "format": "onnx", "opset": int(program.model_proto.opset_import[0].version),
        "run_dir": str(run.run_dir), "checkpoint": str(run.checkpoint.relative_to(run.run_dir)),
        "trained_epochs": run.model.trained_epochs, "dataset": dataset.name,
        "input": {"name": INPUT, "shape": ["batch", channels, size, size], "dtype": "float32", "layout": "NCHW",
                  "channels": "grey" if channels == 1 else "RGB"},
        "preprocessing": {"image_size": size, "scale": 1 / 255, "mean": list(dataset.mean), "std": list(dataset.std),
                          "formula": "(pixel / 255 - mean[c]) / std[c] per channel c"},
        "output": {"name": OUTPUT, "shape": ["batch", classes], "meaning": "logits: apply softmax for probabilities"},
        "class_names": [run.label(i) for i in range(classes)],
        "test_time_augmentation": {"run": bool(run.model.tta), "in_model": False, "note": tta_note},
        "check": {"images": len(x), "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE, "batch_sizes": [len(x), 1],
                  "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
    }
    atomic_write(out, data)
    atomic_write(out.with_name(f"{out.stem}.preprocessing.json"), json.dumps(record, indent=2) + "\n")
    return record
