#!/usr/bin/env bash
# check-disk.sh IMAGE_OR_NBD DISKNAME ACKFILE: prove that a disk holds every write the test
# guest's writer acknowledged, untorn and not stale (checker.c says exactly what is checked).
#   IMAGE_OR_NBD  a raw file or block device (read as it is); an image of another format, such
#                 as the top of a qcow2 chain (read through the chain with qemu-img convert to a
#                 temporary raw file); or an NBD URI (nbd+unix:///EXPORT?socket=PATH,
#                 nbd://HOST:PORT/EXPORT), read live the same way
#   DISKNAME      the writer's name of the disk (vda)
#   ACKFILE       the guest's ack file: the last complete "ACK DISKNAME SEQ" line counts (a
#                 file without one fails the check: the guest's writer was expected to have
#                 written); or a plain number, the acknowledged seq itself
# Prints the checker's summary line; exits 0 if the disk is sound, 1 if not, 2 on other errors.
# Environment: LM_CHECK_SHARE=1 reads an image QEMU still has open (qemu-img -U): only sound if
# the guest is paused or gone. LM_CHECKER: the checker binary (default build/guest/lmcheck,
# built from checker.c when missing or older). LM_CHECK_VERBOSE=1: list the bad blocks.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$(dirname "$HERE")")
if (($# != 3)); then
	echo "usage: $0 IMAGE_OR_NBD DISKNAME ACKFILE" >&2
	exit 2
fi
src=$1 disk=$2 ackfile=$3

checker=${LM_CHECKER:-${GUEST_DIR:-$ROOT/build/guest}/lmcheck}
if [[ ! -x $checker || $HERE/checker.c -nt $checker || $HERE/lmblock.h -nt $checker ]]; then
	mkdir -p "$(dirname "$checker")"
	if ! gcc -O2 -Wall -Wextra -Werror -o "$checker.tmp.$$" "$HERE/checker.c"; then
		echo "check-disk.sh: cannot build $checker" >&2
		exit 2
	fi
	mv -f "$checker.tmp.$$" "$checker"
fi

if [[ $ackfile =~ ^[0-9]+$ ]]; then
	acked=$ackfile
elif [[ -f $ackfile ]]; then
	# A line QEMU has not finished writing does not count.
	acked=$(if [[ -n $(tail -c 1 "$ackfile") ]]; then head -n -1 "$ackfile"; else cat "$ackfile"; fi |
		awk -v d="$disk" '$1 == "ACK" && $2 == d { s = $3 } END { print s + 0 }')
	if ((acked == 0)); then
		echo "check-disk.sh: $ackfile holds no acknowledged write of $disk: nothing would be checked" >&2
		exit 1
	fi
else
	echo "check-disk.sh: no ack file $ackfile" >&2
	exit 2
fi

verbose=()
[[ ${LM_CHECK_VERBOSE:-0} != 1 ]] || verbose=(-v)
share=()
[[ ${LM_CHECK_SHARE:-0} != 1 ]] || share=(-U)

raw=
case $src in
nbd:* | nbd+*:*)
	raw=$(mktemp "${TMPDIR:-/tmp}/lmcheck.XXXXXX")
	trap 'rm -f -- "$raw"' EXIT
	qemu-img convert -f raw -O raw "$src" "$raw" || {
		echo "check-disk.sh: cannot read $src" >&2
		exit 2
	}
	;;
*)
	if [[ -b $src ]]; then
		raw=$src
	elif [[ -f $src ]]; then
		fmt=$(qemu-img info "${share[@]}" --output=json "$src" | jq -r .format) || {
			echo "check-disk.sh: qemu-img info $src failed" >&2
			exit 2
		}
		if [[ $fmt == raw ]]; then
			raw=$src
		else
			raw=$(mktemp "${TMPDIR:-/tmp}/lmcheck.XXXXXX")
			trap 'rm -f -- "$raw"' EXIT
			qemu-img convert "${share[@]}" -O raw "$src" "$raw" || {
				echo "check-disk.sh: cannot read $src ($fmt)" >&2
				exit 2
			}
		fi
	else
		echo "check-disk.sh: no such image $src" >&2
		exit 2
	fi
	;;
esac
"$checker" "${verbose[@]}" "$raw" "$disk" "$acked"
