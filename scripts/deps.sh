#!/bin/sh
# Install what livemerge needs on Debian 12, or say what to run.
# usage: scripts/deps.sh [build|check|demo|bench|qemu10]
set -eu
what=${1:-build}
pkgs="gcc make pkg-config libjson-c-dev libev-dev libssh2-1-dev"
case $what in
# mandoc: integration/test-man.sh lints doc/livemerge.1, and its lint looks up each manual
# the page refers to: qemu-img(1), qemu-storage-daemon(1), ssh(1) and ssh-agent(1) come with
# qemu-utils, qemu-system-x86 and openssh-server.
check) pkgs="$pkgs libcmocka-dev qemu-system-x86 qemu-utils openssh-server socat jq bc time clang libclang-rt-14-dev qemu-guest-agent e2fsprogs mandoc" ;;
demo) pkgs="$pkgs qemu-system-x86 qemu-utils" ;;
# QEMU 10.0 unpacked by scripts/qemu10.sh runs with the system's shared libraries: on Debian 12
# exactly those that 7.2's packages bring. A library a later backport needs goes here.
qemu10) pkgs="$pkgs qemu-system-x86 qemu-utils" ;;
esac
missing=
for p in $pkgs; do
	s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case $s in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "livemerge: missing packages:$missing" >&2
	echo "run as root:  apt-get install -y$missing" >&2
	exit 1
fi
echo "livemerge: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
