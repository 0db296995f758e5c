#!/usr/bin/env bash
# build.sh OUTDIR: build the test guest from Debian packages (apt-get download + dpkg -x, no
# other download) into OUTDIR:
#   OUTDIR/vmlinuz      the kernel of linux-image-cloud-amd64
#   OUTDIR/initrd.img   gzip'd cpio: busybox-static as /init's shell, the virtio modules,
#                       qemu-ga with its shared libraries, /bin/lmwriter (writer.c, static)
#   OUTDIR/lmcheck      the host-side checker (checker.c)
#   OUTDIR/lmwriter     the writer, also for making checker test data on the host
#   OUTDIR/guest.info   what went in (package versions)
# Cached: does nothing when the outputs are newer than this script and its sources. The
# packages are kept in OUTDIR/debs and reused (delete it to fetch the current ones).
# Prints one line saying what it did on stderr; exits non-zero with a reason on failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# == 1 ]] || {
	echo "usage: $0 OUTDIR" >&2
	exit 2
}
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
INPUTS=("$HERE/build.sh" "$HERE/init" "$HERE/writer.c" "$HERE/checker.c" "$HERE/lmblock.h")
OUTPUTS=("$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/lmcheck" "$OUT/lmwriter")
MODULES=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
	virtio_console)
# qemu-guest-agent's library packages: their libraries are taken from the packages, the rest
# (libc, libpcre2, ...) from this host, which is the same Debian release.
PKGS=(busybox-static qemu-guest-agent libglib2.0-0 libnuma1 libudev1 liburing2)

die() {
	echo "build.sh: $*" >&2
	exit 1
}

up_to_date() {
	local o i
	for o in "${OUTPUTS[@]}"; do
		[[ -f $o ]] || return 1
		for i in "${INPUTS[@]}"; do
			[[ $o -nt $i ]] || return 1
		done
	done
}

# One build at a time per OUTDIR; a second caller waits and then finds it done.
exec {lock}>"$OUT/.lock"
flock "$lock"
if up_to_date; then
	exit 0
fi
start=$SECONDS

# ---------------------------------------------------------------- packages
DEBS=$OUT/debs
mkdir -p "$DEBS"
apt_download() {
	(cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null)
}
kernel_deb() {
	local f
	for f in "$DEBS"/linux-image-[0-9]*-cloud-amd64_*.deb; do
		[[ -f $f ]] && echo "$f"
	done | tail -n 1
}
# What is not in $DEBS yet: the packages, and the kernel linux-image-cloud-amd64 depends on.
missing_pkgs() {
	local p kpkg
	for p in "${PKGS[@]}"; do
		compgen -G "$DEBS/${p}_*.deb" >/dev/null || echo "$p"
	done
	if [[ -z $(kernel_deb) ]]; then
		kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1)
		echo "${kpkg:-?kernel}"
	fi
}
mapfile -t want < <(missing_pkgs)
# Package lists that are missing or out of date (a version gone from the mirror): update once.
if ((${#want[@]})) && { [[ " ${want[*]} " == *" ?kernel "* ]] || ! apt_download "${want[@]}"; }; then
	apt-get update -qq >&2 || true
	mapfile -t want < <(missing_pkgs)
	[[ " ${want[*]} " != *" ?kernel "* ]] || die "cannot resolve linux-image-cloud-amd64 (apt-cache depends)"
	apt_download "${want[@]}" || die "apt-get download ${want[*]} failed"
fi
KDEB=$(kernel_deb)
[[ -n $KDEB ]] || die "no kernel package in $DEBS"

# ---------------------------------------------------------------- unpack
WORK=$OUT/work
rm -rf "$WORK"
PKGROOT=$WORK/pkgroot
ROOT=$WORK/root
mkdir -p "$PKGROOT" "$ROOT"
for p in "${PKGS[@]}"; do
	f=$(compgen -G "$DEBS/${p}_*.deb" | tail -n 1)
	dpkg -x "$f" "$PKGROOT"
done
dpkg -x "$KDEB" "$PKGROOT"
KVER=$(basename "$(compgen -G "$PKGROOT/lib/modules/*" | head -n 1)")
[[ -n $KVER && -f $PKGROOT/boot/vmlinuz-$KVER ]] || die "no kernel in $KDEB"
KMOD=$PKGROOT/lib/modules/$KVER
grep -qx 'kernel/fs/ext4/ext4.ko' "$KMOD/modules.builtin" ||
	die "ext4 is not built into $KVER: add its modules (jbd2 mbcache crc16 ext4) to MODULES"

# ---------------------------------------------------------------- the guest's root
# A merged-/usr layout like Debian 12's, so library paths from ldd fit as they are.
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,mnt,tmp,run,var,etc,usr/bin,usr/sbin} \
	"$ROOT"/usr/lib/x86_64-linux-gnu "$ROOT"/usr/lib64 "$ROOT"/usr/lib/modules
ln -s usr/lib "$ROOT/lib"
ln -s usr/lib64 "$ROOT/lib64"
cp "$PKGROOT/bin/busybox" "$ROOT/bin/busybox"
install -m 755 "$HERE/init" "$ROOT/init"
# Each module after the modules it depends on (its modinfo "depends="), dependencies added.
declare -A MODFILE=() MODDONE=()
LOAD_ORDER=()
mod_file() {
	local f
	f=$(find "$KMOD/kernel" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \) | head -n 1)
	[[ -n $f ]] || return 1
	case $f in
	*.xz) xz -dc "$f" >"$WORK/$1.ko" ;;
	*.zst) zstd -qdc "$f" >"$WORK/$1.ko" ;;
	*) cp "$f" "$WORK/$1.ko" ;;
	esac
	MODFILE[$1]=$WORK/$1.ko
}
mod_add() {
	local m=$1 d
	[[ -z ${MODDONE[$m]:-} ]] || return 0
	MODDONE[$m]=1
	if ! mod_file "$m"; then
		grep -q "/$m\.ko\$" "$KMOD/modules.builtin" && return 0 # built in: nothing to load
		die "module $m not found in $KVER"
	fi
	for d in $(tr '\0' '\n' <"${MODFILE[$m]}" | sed -n 's/^depends=//p' | tr ',' ' '); do
		mod_add "$d"
	done
	cp "${MODFILE[$m]}" "$ROOT/lib/modules/$m.ko"
	LOAD_ORDER+=("$m")
}
for m in "${MODULES[@]}"; do
	mod_add "$m"
done
printf '%s\n' "${LOAD_ORDER[@]}" >"$ROOT/lib/modules/load-order"
cp "$PKGROOT/usr/sbin/qemu-ga" "$ROOT/usr/sbin/qemu-ga"
libpath=$PKGROOT/usr/lib/x86_64-linux-gnu:$PKGROOT/lib/x86_64-linux-gnu
libs=$(LD_LIBRARY_PATH=$libpath ldd "$PKGROOT/usr/sbin/qemu-ga") || die "ldd qemu-ga failed"
! grep -q 'not found' <<<"$libs" || die "qemu-ga needs libraries this host lacks: $(grep 'not found' <<<"$libs" | tr -d '\t' | tr '\n' ' ')"
while read -r src; do
	dest=${src#"$PKGROOT"}
	mkdir -p "$ROOT$(dirname "$dest")"
	cp -L "$src" "$ROOT$dest"
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs")
# qemu-ga's guest-shutdown runs /sbin/shutdown; there is no init to tell, so power off now.
printf '#!/bin/sh\nsync\ncase "$*" in *-r*) exec reboot -f ;; esac\nexec poweroff -f\n' >"$ROOT/sbin/shutdown"
chmod 755 "$ROOT/sbin/shutdown"
gcc -static -O2 -Wall -Wextra -Werror -o "$ROOT/bin/lmwriter" "$HERE/writer.c" || die "cannot build writer.c (static)"

# ---------------------------------------------------------------- outputs
BUSYBOX=$PKGROOT/bin/busybox
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) |
	gzip -1 >"$OUT/initrd.img.tmp"
cp "$PKGROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
cp "$ROOT/bin/lmwriter" "$OUT/lmwriter.tmp"
gcc -O2 -Wall -Wextra -Werror -o "$OUT/lmcheck.tmp" "$HERE/checker.c" || die "cannot build checker.c"
{
	echo "kernel $KVER"
	for f in "$DEBS"/*.deb; do
		dpkg-deb --show --showformat="\${Package} \${Version}\n" "$f"
	done
	echo "initrd $(stat -c %s "$OUT/initrd.img.tmp") bytes"
} >"$OUT/guest.info"
for f in initrd.img vmlinuz lmwriter lmcheck; do
	mv -f "$OUT/$f.tmp" "$OUT/$f"
done
rm -rf "$WORK"
echo "build.sh: guest built in $OUT ($KVER, initrd $(stat -c %s "$OUT/initrd.img") bytes) in $((SECONDS - start)) s" >&2
