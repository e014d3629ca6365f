#!/usr/bin/env bash
# Set up a virtual environment in .venv with the exact dependency versions of constraints.txt.
# PyTorch: a CPU wheel in $PIP_FIND_LINKS (e.g. /opt/wheels) is preferred when present; otherwise PyPI's.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
find_links=()
if [ -d /opt/wheels ]; then find_links=(--find-links /opt/wheels); fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet "${find_links[@]}" -c constraints.txt -e ".[dev]"
.venv/bin/python -c "import multimodal, autogluon.tabular, keras, torch; print('multimodal', multimodal.__version__, 'ready in .venv')"
