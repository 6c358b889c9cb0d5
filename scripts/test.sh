#!/usr/bin/env bash
# The whole test command (README, .ci/run): set-up, lint, type check, then every test against the real
# libvirtd, QEMU and Temporal dev server, then the failure-injection suite (docs/failure-model.md), which
# restarts libvirtd and kills processes and therefore runs alone, then the production-shaped stage on a real
# Temporal cluster. Each vitest stage ends with its summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] lint"; npx eslint . && npx prettier --check . >/dev/null
echo "[test] type check"; npx tsc --noEmit -p .
echo "[test] vitest"; npx vitest run "$@"
echo "[test] failure injection"; npx vitest run --config vitest.faults.config.mts
# The production-shaped stage (docs/production.md): a real Temporal cluster on PostgreSQL with mTLS. Its server
# and the Temporal UI server are built from their pinned Go modules once per machine (~11 min and 2-7 min, cached
# outside the work tree).
echo "[test] production-shaped: building the Temporal server and UI server (cached)"; t0=$SECONDS
bash scripts/temporal-cluster.sh build
bash scripts/temporal-ui.sh build
echo "[test] production-shaped: server ready after $((SECONDS - t0)) s"
npx vitest run --config vitest.production.config.mts
