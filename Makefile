# Two commands from a fresh clone: `make train` (a trained digits model) and `make test`.
# Each makes its own virtualenv (.venv) and installs the package with pip on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# TORCH_INDEX=cpu: torch and torchvision from PyTorch's CPU wheels (no CUDA: about 1.6 GB instead of 6.2 GB)
TORCH_INDEX ?=
# pytest-xdist workers for make test: twice the cores, because the suite waits much of its time (on the processes
# it starts, Slurm, W&B's timeouts); override with make test WORKERS=1
WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))

.PHONY: train test lint gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet torch torchvision --index-url https://download.pytorch.org/whl/$(TORCH_INDEX) \
	  || { echo "make: PyTorch's $(TORCH_INDEX) index could not be used (see pip above); without TORCH_INDEX make installs PyPI's torch" >&2; exit 1; })
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@
	@echo "Installed into $(VENV)/. In each new shell: source $(VENV)/bin/activate (then python train.py ...)"

train: $(VENV)/.installed  ## NiN on scikit-learn's digits: about 25 s on an otherwise idle 2-core CPU
	$(PY) train.py experiment=quickstart $(ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash .ci/lint-docker.sh

test: lint  ## ruff, import layers, hadolint, then the whole pytest suite (slow tests included), WORKERS at once
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup --durations=25 $(ARGS)

gpu-check: $(VENV)/.installed  ## every GPU-only check (docs/gpu-fast-path.md) in one table; one line without a GPU
	$(PY) benchmarks/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
