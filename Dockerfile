# nin-lightning: train Network-in-Network with PyTorch Lightning + Hydra on a GPU host.
#
#   docker build -t nin-lightning .
#   docker run --gpus all -e WANDB_API_KEY \
#     -v "$PWD/data:/data" -v "$PWD/outputs:/outputs" \
#     nin-lightning dataset=cifar10 dataset.download=true trainer=gpu
#
# Base image: the image pins torch 2.14.1 from PyPI (ARG TORCH_VERSION), whose Linux wheel is built
# for CUDA 13.0 (torch.version.cuda == "13.0"; it depends on cuda-toolkit==13.0.3
# and nvidia-*-cu13 wheels such as cuDNN 9), so the base is the matching
# CUDA 13.0.3 + cuDNN 9 runtime on Ubuntu 24.04.
# The host needs an NVIDIA driver that supports CUDA 13.0 and the NVIDIA
# Container Toolkit (for `--gpus all`).
FROM nvidia/cuda:13.0.3-cudnn-runtime-ubuntu24.04

# Build-time only (ARG, not ENV), so it does not leak into the runtime image.
ARG DEBIAN_FRONTEND=noninteractive

# Python: Ubuntu 24.04's own python3 (3.12) satisfies the project's
# `requires-python >=3.10` and torch ships cp312 wheels, so we avoid a
# third-party PPA for 3.11. PEP 668 marks the system interpreter as
# externally managed, so everything goes into a venv at /opt/venv.
# Apt packages are not version-pinned (DL3008): Ubuntu's updated package
# versions rotate out of the archive, so exact pins would break rebuilds; the
# base image tag is pinned instead.
# build-essential (gcc, libc headers) and python3-dev (Python.h): Triton compiles a small C launcher for
# each kernel when torch.compile first runs it. Without them every compile fails; a run then notices at
# start and trains eager (nin_lightning/speed.py check_compile), but the GPU fast path is lost.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential \
        ca-certificates \
        python3 \
        python3-dev \
        python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and package come from pyproject.toml (package `nin-lightning`,
# import name `nin_lightning`, plus hydra_plugins/ with the project's launchers).
# torch and torchvision are pinned to the build the CUDA base above matches;
# PyPI's default torch 2.14.1 wheel is the cu130 build.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
COPY pyproject.toml README.md ./
COPY nin_lightning/ ./nin_lightning/
COPY hydra_plugins/ ./hydra_plugins/
COPY conf/ ./conf/
COPY sweeps/ ./sweeps/
COPY train.py ./
RUN pip install --no-cache-dir . "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# Non-root user. ubuntu:24.04 ships a default `ubuntu` user with uid/gid 1000;
# remove it so `nin` gets uid 1000 (matches the usual host user for bind mounts).
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && groupadd --gid 1000 nin \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash nin \
    && mkdir -p /data /outputs \
    && chown nin:nin /data /outputs

# Runs read data from /data and write Hydra outputs / checkpoints / W&B files to
# /outputs: conf/ reads ${oc.env:NIN_DATA_ROOT,data} and
# ${oc.env:NIN_OUTPUT_DIR,outputs}. Hydra overrides (dataset.root=...,
# hydra.run.dir=...) still win over these defaults.
# WANDB_API_KEY is deliberately NOT set here: pass it at run time with
# `-e WANDB_API_KEY` (or `-e WANDB_MODE=offline` to log locally without a key).
ENV NIN_DATA_ROOT=/data \
    NIN_OUTPUT_DIR=/outputs \
    WANDB_DIR=/outputs

VOLUME ["/data", "/outputs"]

# Numeric uid:gid (= nin:nin) so runtimes can verify the user is non-root.
USER 1000:1000

HEALTHCHECK NONE

# Arguments after the image name are Hydra overrides passed to train.py.
ENTRYPOINT ["python", "/app/train.py"]
CMD []
