#!/usr/bin/env bash
# The whole test suite, slow end-to-end and Docker tests included (they are marked, never skipped in CI).
set -euo pipefail
cd "$(dirname "$0")"
exec .venv/bin/python -m pytest "$@"
