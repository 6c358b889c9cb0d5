#!/usr/bin/env bash
# Builds the writing guest of the integration tests (test/helpers/guest-writer.ts): an uncompressed
# Debian kernel (vmlinux, booted directly by QEMU through PVH: no bootloader, no decompression under
# TCG) and a small busybox initramfs whose /init is guest/init.
#
#   bash scripts/build-guest.sh           build when an input changed (idempotent), print what it did
#   bash scripts/build-guest.sh --check   exit 0 when the built guest is up to date, 1 otherwise
#   bash scripts/build-guest.sh --force   rebuild even when up to date
#
# Inputs: the kernel package linux-image-amd64 depends on (linux-image-<abi>-amd64), busybox-static
# (both fetched with `apt-get download`, never installed), guest/init and this script. The stamp
# records all four, so --check is exact and a rebuild happens only when one of them changes.
# Outputs, in ${LIVEMERGE_DATA_DIR:-.data}/guest/: vmlinux, initrd.img, stamp, debs/ (the .deb cache).
set -euo pipefail
export LC_ALL=C
umask 022

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA_DIR=$(realpath -m "${LIVEMERGE_DATA_DIR:-$ROOT/.data}")
OUT=$DATA_DIR/guest
DEBS=$OUT/debs
INIT=$ROOT/guest/init
SELF=$ROOT/scripts/build-guest.sh
# Kernel modules the guest needs (their dependencies are resolved from the modules themselves).
ROOT_MODULES=(virtio_pci virtio_blk)

mode=build
case "${1:-}" in
  '') ;;
  --check) mode=check ;;
  --force) mode=force ;;
  *) echo "usage: $0 [--check|--force]" >&2; exit 2 ;;
esac

say() { printf '[build-guest] %s\n' "$*"; }
die() { printf '[build-guest] error: %s\n' "$*" >&2; exit 1; }

# "<kernel package> <its version> <busybox-static version>": the candidate versions of the kernel image
# that linux-image-amd64 depends on and of busybox-static (one apt-cache call); empty when unknown.
resolve_inputs() {
  local k v b
  read -r k v b < <({ apt-cache show --no-all-versions linux-image-amd64 busybox-static 2>/dev/null || true; } | awk '
    /^Package:/ { p = $2 }
    /^Depends:/ && p == "linux-image-amd64" {
      for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-[0-9]/) {
        k = $i; sub(/,$/, "", k)
        if ($(i + 1) == "(=") { v = $(i + 2); sub(/\),?$/, "", v) }
        break
      }
    }
    /^Version:/ && p == "busybox-static" { b = $2 }
    END { print (k == "" ? "-" : k), (v == "" ? "-" : v), (b == "" ? "-" : b) }') || true
  [ "${k:--}" != - ] && [ "${b:--}" != - ] || return 0
  [ "$v" != - ] || v=''
  # linux-image-amd64 pins its kernel with (= version); ask apt-cache policy otherwise.
  [ -n "${v:-}" ] || v=$(apt-cache policy "$k" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
  [ -n "$v" ] && [ "$v" != "(none)" ] || return 0
  echo "$k $v $b"
}

# The stamp: every input of the build, one per line.
stamp() { # stamp KERNEL_PACKAGE KERNEL_VERSION BUSYBOX_VERSION
  printf 'kernel %s %s\nbusybox busybox-static %s\ninit %s\nscript %s\n' "$1" "$2" "$3" \
    "$(sha256sum <"$INIT" | cut -d' ' -f1)" "$(sha256sum <"$SELF" | cut -d' ' -f1)"
}

up_to_date() { # up_to_date STAMP
  [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initrd.img" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$1" ]
}

[ -f "$INIT" ] || die "$INIT is missing"

if [ $mode = check ]; then
  inputs=$(resolve_inputs)
  [ -n "$inputs" ] || { say "kernel package unknown (no apt lists?): needs a build"; exit 1; }
  # shellcheck disable=SC2086 # three words
  up_to_date "$(stamp $inputs)" && exit 0
  say "out of date"; exit 1
fi

mkdir -p "$OUT" "$DEBS"
exec 9>"$OUT/.lock"
flock 9 # one build at a time (parallel set-ups, test processes)

t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

inputs=$(resolve_inputs)
if [ -z "$inputs" ]; then
  say "linux-image-amd64 or busybox-static unknown to apt-cache: apt-get update"
  apt-get update -q >/dev/null
  inputs=$(resolve_inputs)
fi
[ -n "$inputs" ] || die "cannot resolve the kernel package of linux-image-amd64 and busybox-static"
read -r kpkg kver bver <<<"$inputs"
STAMP=$(stamp "$kpkg" "$kver" "$bver")

if [ $mode = build ] && up_to_date "$STAMP"; then
  say "up to date ($kpkg $kver, busybox-static $bver): nothing to do"
  exit 0
fi

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# cached_deb PACKAGE VERSION: path of the cached .deb, downloading it when missing; drops other
# cached versions of the same package (and other kernels).
cached_deb() {
  local pkg=$1 ver=$2 f p v found=''
  for f in "$DEBS"/*.deb; do
    [ -e "$f" ] || continue
    read -r p v < <(dpkg-deb --show --showformat='${Package} ${Version}\n' "$f")
    if [ "$p" = "$pkg" ] && [ "$v" = "$ver" ]; then found=$f
    elif [ "$p" = "$pkg" ] || { [[ $pkg == linux-image-* ]] && [[ $p == linux-image-* ]]; }; then
      say "dropping cached $(basename "$f")" >&2; rm -f "$f"
    fi
  done
  if [ -z "$found" ]; then
    mkdir -p "$WORK/dl"
    say "apt-get download $pkg=$ver" >&2
    if ! (cd "$WORK/dl" && apt-get download -q "$pkg=$ver") >"$WORK/dl.log" 2>&1; then
      cat "$WORK/dl.log" >&2
      die "apt-get download $pkg=$ver failed"
    fi
    # _apt cannot write into root's build directory: apt says so and downloads as root, which is fine.
    grep -v 'Download is performed unsandboxed' "$WORK/dl.log" >&2 || true
    found=$DEBS/${pkg}_${ver//:/%3a}_amd64.deb
    mv "$WORK"/dl/*.deb "$found"
    rm -rf "$WORK/dl"
  fi
  echo "$found"
}

kdeb=$(cached_deb "$kpkg" "$kver")
bdeb=$(cached_deb busybox-static "$bver")

# ---- kernel: uncompressed vmlinux + the modules the guest loads ----------------------------------
x=$WORK/x
mkdir -p "$x"
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$x" --wildcards './boot/vmlinuz-*' './boot/config-*' \
  './lib/modules/*/modules.builtin' './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/block/virtio_blk.ko*'
vmlinuz=$(echo "$x"/boot/vmlinuz-*)
config=$(echo "$x"/boot/config-*)
grep -qx 'CONFIG_PVH=y' "$config" || die "$kpkg is not built with CONFIG_PVH: QEMU cannot boot its vmlinux directly"
grep -qx 'CONFIG_KERNEL_XZ=y' "$config" || die "$kpkg's bzImage is not xz-compressed (only xz is handled)"
# The bzImage carries the ELF vmlinux as an xz stream: try each xz magic until one decodes to an ELF.
for off in $(grep -aboP '\xFD7zXZ\x00' "$vmlinuz" | cut -d: -f1); do
  # (xz stops reading after the stream: no pipe from tail, whose SIGPIPE would fail under pipefail)
  if xz -dcq --single-stream < <(tail -c +$((off + 1)) "$vmlinuz") >"$WORK/vmlinux" 2>/dev/null &&
    [ "$(head -c 4 "$WORK/vmlinux")" = $'\x7fELF' ]; then
    break
  fi
  rm -f "$WORK/vmlinux"
done
[ -s "$WORK/vmlinux" ] || die "no xz-compressed ELF kernel found in $(basename "$vmlinuz")"

r=$WORK/root
mkdir -p "$r/bin" "$r/dev" "$r/proc" "$r/sys" "$r/tmp" "$r/etc" "$r/lib/modules"
declare -A seen=()
order=()
add_module() { # depth-first: dependencies first
  local m=$1 f dep deps
  [ -z "${seen[$m]:-}" ] || return 0
  seen[$m]=1
  # module names use '_' where some file names use '-'
  f=$(find "$x/lib/modules" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "${m//_/-}.ko" -o -name "${m//_/-}.ko.xz" \) -print -quit)
  if [ -z "$f" ]; then
    grep -qE "/($m|${m//_/-})\.ko\$" "$x"/lib/modules/*/modules.builtin && return 0 # built into the kernel
    die "module $m not found in $kpkg (only drivers/virtio and virtio_blk are unpacked)"
  fi
  deps=$(grep -m1 -aoE 'depends=[A-Za-z0-9_,-]*' "$f" | cut -d= -f2 | tr ',' ' ')
  for dep in $deps; do add_module "${dep//-/_}"; done
  case $f in
    *.xz) xz -dc "$f" >"$r/lib/modules/$m.ko" ;;
    *) cp "$f" "$r/lib/modules/$m.ko" ;;
  esac
  order+=("$m")
}
for m in "${ROOT_MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$r/etc/modules"

# ---- busybox initramfs ------------------------------------------------------------------------
dpkg-deb --fsys-tarfile "$bdeb" | tar -x -C "$x" ./bin/busybox
bb=$x/bin/busybox
"$bb" sh -n "$INIT" || die "guest/init: syntax error (busybox sh -n)"
cp "$bb" "$r/bin/busybox"
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
install -m 0755 "$INIT" "$r/init"
(cd "$r" && find . | sort | "$bb" cpio -o -H newc 2>/dev/null | gzip -9n) >"$WORK/initrd.img"

# ---- install: outputs first, the stamp last ---------------------------------------------------
chmod 0644 "$WORK/vmlinux" "$WORK/initrd.img"
mv -f "$WORK/vmlinux" "$OUT/vmlinux"
mv -f "$WORK/initrd.img" "$OUT/initrd.img"
printf '%s\n' "$STAMP" >"$OUT/stamp.new" && mv -f "$OUT/stamp.new" "$OUT/stamp"
say "built in $(elapsed) s: $OUT/vmlinux ($(($(stat -c %s "$OUT/vmlinux") >> 20)) MiB, $kpkg $kver)," \
  "$OUT/initrd.img ($(($(stat -c %s "$OUT/initrd.img") >> 10)) KiB, busybox-static $bver, modules: ${order[*]})"
