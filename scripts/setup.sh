#!/usr/bin/env bash
# Create .venv and install faultlab into it. Usage: bash scripts/setup.sh [EXTRAS]
#   bash scripts/setup.sh            # faultlab itself (torch backend for Keras)
#   bash scripts/setup.sh dev,tf,ray # plus test tools, tensorflow-cpu and ray
# torch is pinned to the CPU build through constraints.txt; an unpinned torch pulls
# a multi-GB CUDA build. Set PYTHON to choose the interpreter (default python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt)
"${pip[@]}" torch==2.13.0
if [ -n "$extras" ]; then "${pip[@]}" -e ".[${extras}]"; else "${pip[@]}" -e .; fi
