#!/usr/bin/env bash
# The demo (README's first command): set-up, the local dev stack, then `livemerge demo`, which creates a VM
# with two disks and three snapshots, removes snapshots while it runs (with progress bars), verifies every
# byte, shows the chains, the audit log and the Temporal UI links, and cleans up.
# Keep the VM afterwards with `--keep` or KEEP=1; other options: `npx livemerge demo --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
bash scripts/setup.sh
npx --no-install livemerge dev up
npx --no-install livemerge demo "$@"
echo "[demo.sh] total $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (set-up, dev up and demo)"
