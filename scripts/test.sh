#!/usr/bin/env bash
# The whole test command (README, .ci/run): set-up, lint, type check, then every test against the real
# libvirtd, QEMU and Temporal dev server, then the failure-injection suite (docs/failure-model.md), which
# restarts libvirtd and kills processes and therefore runs alone, after everything else. Each vitest stage
# ends with its summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] lint"; npx eslint . && npx prettier --check . >/dev/null
echo "[test] type check"; npx tsc --noEmit -p .
echo "[test] vitest"; npx vitest run "$@"
echo "[test] failure injection"; npx vitest run --config vitest.faults.config.mts
