#!/usr/bin/env bash
# Starts virtlogd and libvirtd when they are not running (there is no systemd on these machines).
set -euo pipefail
if [ -e /dev/kvm ] && ! runuser -u libvirt-qemu -- test -r /dev/kvm -a -w /dev/kvm 2>/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
if ! pgrep -x libvirtd >/dev/null; then libvirtd -d; fi
for _ in $(seq 1 100); do virsh -q -c qemu:///system list >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "libvirtd did not answer on qemu:///system" >&2; exit 1
