#!/usr/bin/env bash
# Runs the agent on freshly rendered demo footage: bash scripts/demo.sh [--port N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh
exec .venv/bin/python -m agent.demo "$@"
