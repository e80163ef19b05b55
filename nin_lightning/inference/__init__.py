"""Use what a run trained: load its model with its data's normalisation (loading.py), evaluate it again
(evaluation.py), classify image files (prediction.py, images.py), export it to ONNX (onnx_export.py).

`python -m nin_lightning.evaluate | predict | export RUN_DIR ...` are thin commands over these; a notebook
calls them directly:

    from nin_lightning.inference import load_run
    run = load_run(Path("outputs/runs/<time>"))      # best.ckpt, as the run's own test ran it
    run.model.evaluate(run.normalise(uint8_images))  # logits
"""

from nin_lightning.inference.evaluation import evaluate_run, write_outputs
from nin_lightning.inference.loading import LoadedRun, load_run, parse_overrides
from nin_lightning.inference.onnx_export import ONNX_TOLERANCE, export_onnx
from nin_lightning.inference.prediction import predict_files, ranked

__all__ = ["ONNX_TOLERANCE", "LoadedRun", "evaluate_run", "export_onnx", "load_run", "parse_overrides",
           "predict_files", "ranked", "write_outputs"]
