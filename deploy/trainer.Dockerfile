# syntax=docker/dockerfile:1
# The deepfm trainer: torch, deepfm[train] and configs/, run by k8s/training/job.yaml with torchrun.
#
#   docker build -f deploy/trainer.Dockerfile -t deepfm-trainer .                  # CPU torch (gloo)
#   docker build -f deploy/trainer.Dockerfile -t deepfm-trainer \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .          # CUDA torch (NCCL)
#
# The data, the run directories and the models store are volumes, never in the image. The build
# context is limited by deploy/trainer.Dockerfile.dockerignore (BuildKit reads it for this file).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# The wheel index of the torch build: CPU-only by default; a CUDA index for GPU nodes (CUDA wheels
# carry their own CUDA libraries; the node provides the driver).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG APP_UID=10001

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install torch==2.13.0 --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY deepfm ./deepfm
# Only the training extras. The versions are those pyproject.toml admits (DL3013 asks for pins on
# named packages, not the project).
# hadolint ignore=DL3013
RUN pip install ".[train]" && python -c "import deepfm.training.distributed, torch.distributed.run"
COPY configs ./configs

USER ${APP_UID}:${APP_UID}
CMD ["python", "-m", "deepfm", "train", "--help"]
