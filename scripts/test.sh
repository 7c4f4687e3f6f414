#!/usr/bin/env bash
# The whole test suite, set-up included: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The package: built in Debian 13, installed with apt in a fresh Debian 13 chroot, a
# session played, purged. Chroots need root; CI runs as root.
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/test-deb.sh
else
    echo "Skipping the .deb test (it needs root): sudo bash scripts/test-deb.sh"
fi
# A cap on the whole run: a test stopped by pytest-timeout can leave a worker thread
# that keeps the interpreter from exiting.
timeout --kill-after=30 2400 .venv/bin/python -m pytest --durations=25 "$@"
