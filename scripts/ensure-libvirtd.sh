#!/usr/bin/env bash
# Starts virtlogd and libvirtd when they are not running (there is no systemd on these machines). The
# system daemons are told apart from simulated hosts' daemons (same names, own namespaces) by their pid
# files in /run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -e /dev/kvm ] && ! runuser -u libvirt-qemu -- test -r /dev/kvm -a -w /dev/kvm 2>/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
running() { [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }

# livemerge's qemu hook (no migration while a merge holds a VM). libvirtd finds hooks when it starts: a
# running daemon is restarted once when the hook is new or changed (its VMs keep running).
hook=/etc/libvirt/hooks/qemu.d/livemerge
restart=false
if ! cmp -s "$here/libvirt-hooks/livemerge" "$hook"; then
  install -D -m 0755 "$here/libvirt-hooks/livemerge" "$hook"
  restart=true
fi
running virtlogd || virtlogd -d
if running libvirtd && $restart; then
  pid=$(cat /run/libvirtd.pid)
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
running libvirtd || libvirtd -d
for _ in $(seq 1 100); do virsh -q -c qemu:///system list >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "libvirtd did not answer on qemu:///system" >&2; exit 1
