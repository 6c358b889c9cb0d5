#!/usr/bin/env bash
# The whole test command (README, .ci/run): set-up, lint, type check, then every test against the real
# libvirtd, QEMU and Temporal dev server. Ends with vitest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] lint"; npx eslint . && npx prettier --check . >/dev/null
echo "[test] type check"; npx tsc --noEmit -p .
echo "[test] vitest"; npx vitest run "$@"
