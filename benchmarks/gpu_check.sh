#!/usr/bin/env bash
# GPU check: DeepFM and xDeepFM, one epoch each of the MovieLens-100K leave-one-out protocol on CUDA
# (float32, then mixed precision), printing training samples/s and the test metrics. Never run by CI.
#
#   bash benchmarks/gpu_check.sh                 # one GPU
#   NPROC=4 bash benchmarks/gpu_check.sh         # 4 GPUs of this machine: torchrun, NCCL
#
# Needs an NVIDIA GPU and a CUDA build of torch 2.13.0 in the environment (PYTHON, default
# .venv/bin/python), and MovieLens-100K (DEEPFM_DATA_DIR). Record its output in
# benchmarks/results/gpu_check.md with the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
NPROC="${NPROC:-1}"

"$PYTHON" - "$NPROC" <<'PY'
import sys

import torch

wanted = int(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit(
        f"gpu_check: CUDA is not available here (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
        "run it on a machine with an NVIDIA GPU and a CUDA build of torch==2.13.0"
    )
if torch.cuda.device_count() < wanted:
    sys.exit(f"gpu_check: NPROC={wanted} but {torch.cuda.device_count()} CUDA devices are visible")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {wanted} x {torch.cuda.get_device_name(0)}")
PY

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "$NPROC" -gt 1 ]; then
    launch=("$PYTHON" -m torch.distributed.run --standalone "--nproc-per-node=$NPROC" -m deepfm)
else
    launch=("$PYTHON" -m deepfm)
fi
for model in deepfm xdeepfm; do
    for amp in false true; do
        "${launch[@]}" train --config "configs/${model}_movielens.yaml" --run-dir "$out/$model-amp-$amp" \
            -o training.device=cuda -o training.amp=$amp -o training.epochs=1 -o training.progress=false >/dev/null
    done
done

"$PYTHON" - "$out" <<'PY'
import json
import sys
from pathlib import Path

print(f"{'model':<8} {'amp':<5} {'samples/s':>10} {'s/epoch':>8} {'test AUC':>9} {'HR@10':>7} {'NDCG@10':>8}")
for run in sorted(Path(sys.argv[1]).iterdir()):
    metrics = json.loads((run / "metrics.json").read_text())
    model, _, amp = run.name.split("-")
    test = metrics["test"]
    print(
        f"{model:<8} {amp:<5} {metrics['train_samples_per_second']:>10,.0f} {metrics['seconds_per_epoch']:>8.1f} "
        f"{test['auc']:>9.4f} {test['hr@10']:>7.4f} {test['ndcg@10']:>8.4f}"
    )
PY
