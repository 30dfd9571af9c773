# syntax=docker/dockerfile:1
# The deepfm scoring service: CPU-only torch, the deepfm core, service/ and the models store.
#
#   docker build -t deepfm-scorer .
#   docker run --rm -p 8000:8000 deepfm-scorer
#
# A container runs one uvicorn worker per CPU it may use (`docker run --cpus N`; deploy/start-scorer.sh
# reads the quota), each with 1 torch thread; DEEPFM_SERVE_WORKERS and DEEPFM_SERVE_TORCH_THREADS
# override them, and OMP/MKL follow the latter.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with torch (CPU build) and deepfm[serve] -----------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from PyTorch's CPU-only index: the CUDA wheels on PyPI are several GB that a CPU
# service never uses. deepfm pins torch==2.13.0, which the installed 2.13.0+cpu satisfies, so the
# next step does not fetch torch again.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY pyproject.toml README.md ./
COPY deepfm ./deepfm
COPY service ./service
# A regular (not editable) install: the packages land in the venv's site-packages and /src is
# left behind in this stage. Only the serving extras; no training or dev dependencies. The
# versions are those pyproject.toml admits (DL3013 asks for pins on named packages, not the project).
# hadolint ignore=DL3013
RUN pip install ".[serve]" \
    && python -c "import deepfm.artifact, service, torch; assert not torch.cuda.is_available()"

# ---- runtime: the venv, the start script and the models store; no compilers, tests or data ------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" deepfm \
    && useradd --system --uid "${APP_UID}" --gid deepfm --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin deepfm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    DEEPFM_SERVE_HOST=0.0.0.0 \
    DEEPFM_SERVE_PORT=8000 \
    DEEPFM_SERVE_TORCH_THREADS=1 \
    DEEPFM_SERVE_MODELS_STORE=/app/models_store \
    PROMETHEUS_MULTIPROC_DIR=/tmp/deepfm-metrics

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root and not writable by the service user: the service only reads the store. Compose
# and Kubernetes may mount a shared store over /app/models_store (read-only) for rollouts.
COPY models_store ./models_store
COPY deploy/start-scorer.sh deploy/healthcheck.py ./deploy/

USER ${APP_UID}:${APP_UID}
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=4s --start-period=60s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
CMD ["sh", "deploy/start-scorer.sh"]
