#!/usr/bin/env bash
# Build Pillow-SIMD (AVX2) from its PyPI sdist into its own venv, bench/.venvs/pillow-simd.
#
# Pillow-SIMD installs as the module `PIL`, replacing Pillow, so it must never go into the
# project's venv: it lives apart and bench/peers/pillow_chains.py runs the same chains there.
# Needs a C compiler and the libjpeg-turbo/zlib/libpng headers (Debian: libjpeg-dev zlib1g-dev
# libpng-dev). Usage: bench/peers/build_pillow_simd.sh [python3.11]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3}"
venv="$here/.venvs/pillow-simd"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
CC="cc -mavx2" "$venv/bin/python" -m pip install --no-binary pillow-simd --no-cache-dir pillow-simd
"$venv/bin/python" -m pip install --quiet numpy
"$venv/bin/python" - <<'PY'
import PIL
from PIL import features
print("Pillow-SIMD", PIL.__version__, "libjpeg-turbo:", features.check_feature("libjpeg_turbo"))
PY
