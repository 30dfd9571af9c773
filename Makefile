# Targets used by the README and by CI (.ci/run). Everything runs from a local virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= models_store

.PHONY: install serve test test-all lint format deploy-check train-defaults bench-encoding bench-embedding bench-quality bench-serve \
	bench-serve-peer bench-http-server bench-deploy clean

# torch is installed first and pinned: 2.13.0 is the CPU build here; an open range would pull CUDA wheels.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed  ## create .venv and install the project with its dev extras

serve: install  ## serve the default model from models_store on http://127.0.0.1:8000
	$(BIN)/deepfm serve

test: install  ## the test suite CI runs (slow tests excluded)
	$(BIN)/pytest -m "not slow"

test-all: install  ## every test, slow ones included
	$(BIN)/pytest

# Tests and benchmarks import their helpers by name from their own directory (as pytest and the scripts
# run them), so mypy checks them directory by directory; strict, but they may call untyped functions
# of third-party libraries and take Any back. The model tests read layers' submodules and tensors as
# attributes, which nn.Module types as `Tensor | Module`: those checks are off there.
TYPED_SCRIPT_DIRS := tests tests/data tests/service tests/deploy tests/training benchmarks
SCRIPT_MYPY = $(BIN)/mypy --follow-imports=silent --allow-untyped-calls --no-warn-return-any
MODULE_ATTRIBUTE_CODES := union-attr index operator arg-type comparison-overlap

lint: install  ## ruff lint + format check, mypy strict on the packages, tests and benchmarks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	for dir in $(TYPED_SCRIPT_DIRS); do MYPYPATH=$$dir:tests:tests/deploy:tests/service:deploy:. $(SCRIPT_MYPY) $$dir/*.py || exit 1; done
	MYPYPATH=tests/models:. $(SCRIPT_MYPY) $(MODULE_ATTRIBUTE_CODES:%=--disable-error-code=%) tests/models/*.py

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

train-defaults: install  ## retrain the three default models and export them into $(STORE)
	for model in deepfm xdeepfm attention_deepfm; do \
		$(BIN)/deepfm train --config configs/$${model}_movielens.yaml --export --store $(STORE) -o training.progress=false || exit 1; \
	done

deploy-check: install  ## static checks of Dockerfile, compose, k8s, nginx, prometheus (no Docker needed)
	PATH="$(CURDIR)/$(BIN):$$PATH" sh deploy/check.sh

bench-serve: install  ## service vs bare FastAPI vs model alone, batch 1 and 100 (loopback)
	$(BIN)/python benchmarks/serve_bench.py

bench-serve-peer: install  ## service vs TorchServe (installed into .bench-venvs/) on the same artifact, and a profile
	$(BIN)/python benchmarks/serve_peer_bench.py

bench-http-server: install  ## the service and HTTP floors under uvicorn and under granian (installed into .bench-venvs/)
	$(BIN)/python benchmarks/http_server_bench.py

bench-deploy: install  ## throughput and p99 through nginx, 1 and 2 replicas (needs nginx and wrk)
	$(BIN)/python benchmarks/deploy_bench.py

bench-encoding: install
	$(BIN)/python benchmarks/encoding_bench.py

bench-embedding: install  ## model call and training step per embedding implementation (a few minutes)
	$(BIN)/python benchmarks/embedding_bench.py

bench-quality: install  ## 3 models x 3 seeds on the full data: hours on 2 cores
	$(BIN)/python benchmarks/quality_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
