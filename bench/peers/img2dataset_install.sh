#!/usr/bin/env bash
# Install img2dataset (the peer the fetcher benchmark compares against) in its
# own venv under bench/.venvs/ (gitignored), so its pinned dependencies never
# touch artpipe's environment.  Usage: bash bench/peers/img2dataset_install.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venvs/img2dataset"
version="${IMG2DATASET_VERSION:-1.47.0}"
python="${PYTHON:-python3}"
if [ -x "$venv/bin/img2dataset" ]; then
    echo "img2dataset already installed in $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "img2dataset==$version"
"$venv/bin/img2dataset" --help >/dev/null
echo "img2dataset $version installed in $venv"
