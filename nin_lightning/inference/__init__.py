"""Use what a run trained: load its model with its data's normalisation (loading.py), evaluate it again
(evaluation.py), classify image files (prediction.py, images.py), export it to ONNX (onnx_export.py);
run_files.py checks a run dir's paths and overrides before torch is imported.

`python -m nin_lightning.evaluate | predict | export RUN_DIR ...` are thin commands over these; a notebook
calls them directly:

    from nin_lightning.inference.loading import load_run
    run = load_run(Path("outputs/runs/<time>"))      # best.ckpt, as the run's own test ran it
    run.model.evaluate(run.normalise(uint8_images))  # logits

Importing this package imports nothing else (the commands' argument errors come before torch's start-up).
"""
