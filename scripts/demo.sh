#!/usr/bin/env bash
# The demo (README's first command): set-up, the local dev stack, then `livemerge demo`, which creates a VM
# with two disks and three snapshots, removes snapshots while it runs (with progress bars), verifies every
# byte, shows the chains, the audit log and the Temporal UI links, merges a VM on a second host, and cleans up.
# Keep the VM afterwards with `--keep` or KEEP=1; other options: `npx livemerge demo --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
bash scripts/setup.sh
# Two hosts (the system libvirtd and a simulated one); a stack already running with other hosts is kept as it is.
rc=0; npx --no-install livemerge dev up --hosts 2 || rc=$?
if [ "$rc" = 2 ]; then npx --no-install livemerge dev up; elif [ "$rc" != 0 ]; then exit "$rc"; fi
npx --no-install livemerge demo "$@"
echo "[demo.sh] total $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (set-up, dev up and demo)"
