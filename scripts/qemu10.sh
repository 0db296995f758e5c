#!/usr/bin/env bash
# scripts/qemu10.sh [OUTDIR]: QEMU 10.0 from Debian's bookworm-backports, unpacked into OUTDIR
# (default build/qemu10) beside the system's QEMU 7.2, which stays as it is.
#
# The packages are fetched with apt-get download (bookworm-backports is added to apt's sources
# as a file of its own, /etc/apt/sources.list.d/livemerge-backports.sources, with the mirror of
# the system's own sources) and unpacked with dpkg -x: nothing is installed. The binaries use
# the system's shared libraries (the ones QEMU 7.2 brought; `scripts/deps.sh qemu10` installs
# any a newer QEMU needs beyond those).
#
#   OUTDIR/root/       the unpacked packages
#   OUTDIR/debs/       the .deb files, kept
#   OUTDIR/bin/        qemu-system-x86_64 (with -L for the backports' firmware: seabios, the
#                      option ROMs of qemu-system-data), qemu-storage-daemon, qemu-img,
#                      qemu-io, qemu-nbd: wrappers that also set QEMU_MODULE_DIR, so no module
#                      of the system's 7.2 is ever loaded. Put OUTDIR/bin first on PATH.
#   OUTDIR/version     the package versions
# Does nothing when OUTDIR already holds them (delete OUTDIR to fetch again). Needs root only
# to add the suite and update apt's lists; otherwise says what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/qemu10}
SUITE=bookworm-backports
PKGS=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils seabios)
TOOLS=(qemu-system-x86_64 qemu-storage-daemon qemu-img qemu-io qemu-nbd)
WANT='version 10\.0\.'
SYS_SOURCES=/etc/apt/sources.list.d/debian.sources
OUR_SOURCES=/etc/apt/sources.list.d/livemerge-backports.sources

die() {
	echo "qemu10.sh: $*" >&2
	exit 1
}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

ready() {
	local t
	for t in "${TOOLS[@]}"; do
		[[ -x $OUT/bin/$t ]] || return 1
	done
	[[ -s $OUT/version ]] && "$OUT/bin/qemu-system-x86_64" --version 2>/dev/null | grep -q "$WANT"
}

# One run at a time per OUTDIR; a second caller waits and then finds it done.
exec {lock}>"$OUT/.lock"
flock "$lock"
ready && exit 0
start=$SECONDS

# ---------------------------------------------------------------- apt source and packages

# The mirror of the system's own "bookworm" suite (deb822 stanzas: URIs + Suites).
mirror() {
	[[ -r $SYS_SOURCES ]] || die "no $SYS_SOURCES to take the Debian mirror from"
	awk '/^[ \t]*$/ { u = "" } /^URIs:/ { u = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && u != "") { print u; exit } }' \
		"$SYS_SOURCES"
}

add_suite() {
	local uri want
	uri=$(mirror)
	[[ -n $uri ]] || die "no URIs line for suite bookworm in $SYS_SOURCES"
	want=$(printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$SUITE" /usr/share/keyrings/debian-archive-keyring.gpg)
	[[ -f $OUR_SOURCES && $(cat "$OUR_SOURCES") == "$want" ]] && return 1
	if [[ $(id -u) != 0 ]]; then
		echo "qemu10.sh: apt does not know $SUITE; as root, put this in $OUR_SOURCES:" >&2
		echo "$want" >&2
		echo "then run: apt-get update; make check-qemu10" >&2
		exit 1
	fi
	echo "$want" >"$OUR_SOURCES"
	echo "qemu10.sh: added $SUITE ($uri) as $OUR_SOURCES" >&2
}

DEBS=$OUT/debs
mkdir -p "$DEBS"
download() {
	local p
	local -a pinned=()
	for p in "${PKGS[@]}"; do
		pinned+=("$p/$SUITE")
	done
	rm -f -- "$DEBS"/*.deb
	(cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${pinned[@]}" >/dev/null)
}

# apt-get update only when the suite is new to apt or the lists are out of date.
if add_suite || ! download 2>/dev/null; then
	[[ $(id -u) == 0 ]] || die "apt-get download from $SUITE failed; as root run: apt-get update"
	apt-get update -qq >&2 || die "apt-get update failed"
	download || die "apt-get download ${PKGS[*]} from $SUITE failed"
fi

# ---------------------------------------------------------------- unpack

rm -rf -- "${OUT:?}/root.new" "${OUT:?}/bin"
mkdir -p "$OUT/root.new"
for f in "$DEBS"/*.deb; do
	dpkg -x "$f" "$OUT/root.new"
done
rm -rf -- "$OUT/root"
mv "$OUT/root.new" "$OUT/root"
R=$OUT/root
MODDIR=$R/usr/lib/x86_64-linux-gnu/qemu

# Shared libraries: the system's. Name any that is missing, with what the packages depend on.
missing=$(for t in "${TOOLS[@]}"; do ldd "$R/usr/bin/$t"; done 2>&1 | sed -n 's/^[[:space:]]*\([^ ]*\) => not found.*/\1/p' | sort -u)
if [[ -n $missing ]]; then
	echo "qemu10.sh: shared libraries missing on this system: ${missing//$'\n'/ }" >&2
	for f in "$DEBS"/*.deb; do
		echo "  ${f##*/} depends on: $(dpkg-deb -f "$f" Depends)" >&2
	done
	die "install the packages that provide them (and add them to scripts/deps.sh's qemu10 list)"
fi

# QEMU 10 looks for firmware in /usr/share/qemu, /usr/share/seabios and /usr/lib/ipxe/qemu
# only (not relative to the binary): -L puts the unpacked seabios and qemu-system-data first.
mkdir -p "$OUT/bin"
for t in "${TOOLS[@]}"; do
	firmware=
	[[ $t == qemu-system-* ]] && firmware="-L '$R/usr/share/seabios' -L '$R/usr/share/qemu' "
	printf '#!/bin/sh\n# QEMU 10.0 unpacked by scripts/qemu10.sh\nQEMU_MODULE_DIR=%s\nexport QEMU_MODULE_DIR\nexec %s %s"$@"\n' \
		"'$MODDIR'" "'$R/usr/bin/$t'" "$firmware" >"$OUT/bin/$t"
	chmod 755 "$OUT/bin/$t"
done

for f in "$DEBS"/*.deb; do
	dpkg-deb -f "$f" Package Version | paste -sd ' '
done >"$OUT/version"
for t in "${TOOLS[@]}"; do
	"$OUT/bin/$t" --version >/dev/null 2>&1 || die "$OUT/bin/$t --version failed: $("$OUT/bin/$t" --version 2>&1 | head -n 1)"
done
v=$("$OUT/bin/qemu-system-x86_64" --version | head -n 1)
grep -q "$WANT" <<<"$v" || die "expected QEMU 10.0.x from $SUITE, got: $v"
echo "qemu10.sh: $v in $OUT ($((SECONDS - start)) s)" >&2
