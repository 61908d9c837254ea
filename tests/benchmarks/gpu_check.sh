#!/usr/bin/env bash
# The GPU check (tests/benchmarks/gpu_check.py): a flow with a GPU worker, CUDA vs CPU features, pipeline vs bare
# img/s with AMP, channels_last and torch.compile; one JSON line. Under 5 minutes on one GPU.
#   bash tests/benchmarks/gpu_check.sh [DATA_DIR] [--out DIR]   (extra arguments go to gpu_check.py, e.g. --allow-cpu)
# Measured on one H200 on 2026-12-04 (README "GPU"; docs/measurements/). Offline CUDA machine: tests/benchmarks/gpu_bundle.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA_DIR=../shared/data/physionet
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then DATA_DIR=$1; shift; fi  # a first argument that is no option: DATA_DIR
export PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" >&2
exec "$PY" tests/benchmarks/gpu_check.py --data-dir "$DATA_DIR" "$@"
