#!/usr/bin/env bash
# A virtual environment with the SageMaker Python SDK, for the local-mode tools and tests
# (tools/sdk_local_endpoint.py, tools/sdk_local_images.py). The SDK is not a dependency of the product: its own
# pins (packaging<25, importlib-metadata<7, ...) would fight ours, so it lives in a venv of its own.
#
#   SDK_PYTHON=$(tools/sdk-venv.sh)     # creates .sdk-venv when missing; stdout is only its python's path
#
# Local mode also needs docker-compose (Debian's 1.29 here): installed with apt-get when missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SDK_VENV:-$PWD/.sdk-venv}
PYTHON=${PYTHON:-python3}
log() { echo "sdk-venv: $*" >&2; }

if ! "$VENV/bin/python" -c "import sagemaker" 2>/dev/null; then
  log "creating $VENV with the SDK pinned in tools/sdk-constraints.txt"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" >&2
  "$VENV/bin/python" -m pip install --quiet -c tools/sdk-constraints.txt sagemaker >&2
fi
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  log "installing docker-compose"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null >&2
  apt-get install -y -qq --no-install-recommends docker-compose </dev/null >&2
fi
echo "$VENV/bin/python"
