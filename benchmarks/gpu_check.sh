#!/usr/bin/env bash
# One prepared GPU run (device tool): AMP accuracy check and a ResNet-18 fine-tune, then
# plain PyTorch vs loopline's training loop on the same GPU. Ray and MLflow are not on the
# device image (Ray's wheel, 79 MB, is over the device transfer limit), so the Ray path and
# the whole train step are measured on CPU here and in CI.
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
trap 'cp benchmarks/results/*cuda*.json "${OUT:-/tmp}/" 2>/dev/null || true' EXIT
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m benchmarks.gpu_check 2>&1 | tr '\r' '\n' | grep -v "epoch"
python3 -m benchmarks.train_overhead --device cuda --skip-ray --scale 40 --epochs 3 --batch-size 256 2>&1 | tr '\r' '\n' | grep -v "epoch"
python3 -m benchmarks.train_overhead --device cuda --skip-ray --scale 1 --epochs 10 2>&1 | tr '\r' '\n' | grep -v "epoch"
