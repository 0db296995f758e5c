#!/usr/bin/env bash
# test-harness: the harness (lib.sh) against real QEMU, without livemerge.
#
# For each layout (-blockdev VM, -drive VM, qemu-storage-daemon) with two disks, chains of
# depth 1 and 3: query-block / query-named-block-nodes through qmp_raw show the files mk_chain
# made, in chain order; a live write (HMP qemu-io on the VMs, NBD on qsd) lands in the top
# image only; after stop_vm the layer patterns and the live write read back offline. Also
# checks that the checkers themselves reject wrong data and that qmp_raw reports QMP errors.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_setup

LIVE_OFF=8M

# files_json TOPFILE: the chain's files, top first, as a JSON array.
files_json() {
	chain_files "$1" | jq -R . | jq -sc .
}

# check_named_nodes SOCK TOPFILE...: among query-named-block-nodes, the qcow2 nodes are
# exactly the layers of the given chains, each once, each with the right backing file.
check_named_nodes() {
	local sock=$1 nodes want got
	shift
	nodes=$(qmp_raw "$sock" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}')
	got=$(jq -c '[.return[] | select(.drv == "qcow2") | {file, backing: .backing_file}] | sort' <<<"$nodes")
	# Layer k (top first) is backed by layer k+1 of the same chain; the base by nothing.
	want=$(for top; do
		chain_files "$top" | jq -R . | jq -sc '. as $f | [range(0; length) | {file: $f[.], backing: $f[. + 1]}]'
	done | jq -sc '[.[][]] | sort')
	it_assert_eq "$got" "$want" "qcow2 nodes in query-named-block-nodes"
	echo "$nodes"
}

# check_vm_block LAYOUT QDEVIDS DEVICES TOPFILE...: query-block of the running VM
# $T/LAYOUT.qmp shows one backend per TOPFILE with its qdev id and block backend name (the
# i-th entries of the "|"-separated QDEVIDS and DEVICES) and the whole chain of files.
check_vm_block() {
	local layout=$1 i=0 top blocks entry qdev
	local -a qdevids devices
	IFS='|' read -r -a qdevids <<<"$2"
	IFS='|' read -r -a devices <<<"$3"
	shift 3
	blocks=$(qmp_raw "$T/$layout.qmp" '{"execute":"query-block"}')
	it_assert_eq "$(jq '.return | length' <<<"$blocks")" "$#" "$layout: query-block entries"
	for top; do
		qdev=/machine/peripheral/${qdevids[i]}/virtio-backend
		entry=$(jq -c --arg q "$qdev" '.return[] | select(.qdev == $q)' <<<"$blocks")
		[[ -n $entry ]] || it_fail "$layout: no query-block entry with qdev $qdev"
		it_assert_eq "$(jq -r .device <<<"$entry")" "${devices[i]:-}" "$layout: $qdev device name"
		it_assert_eq "$(jq -c '[.inserted.image | recurse(.["backing-image"]; . != null) | .filename]' <<<"$entry")" \
			"$(files_json "$top")" "$layout: $qdev chain in query-block"
		i=$((i + 1))
	done
}

# check_offline TOPFILE NAME DEPTH PATTERN: after the process stopped: the chain's patterns,
# the live write PATTERN at LIVE_OFF in the top, zeroes there in the layer below the top.
check_offline() {
	local top=$1 name=$2 depth=$3 pat=$4 below
	verify_chain_data "$top" "$name" "$depth"
	qemu_io_check -r "$top" "read -P $pat $LIVE_OFF 1M"
	below=$(chain_files "$top" | sed -n 2p)
	qemu_io_check -r "$below" "read -P 0 $LIVE_OFF 1M"
}

mkdir "$T/img"

# The checkers must reject wrong data: a chain of depth 1 has no layer-2 pattern at 2M.
neg=$(mk_chain "$T/img" neg 1 64M)
if (verify_chain_data "$neg" neg 2) 2>/dev/null; then
	it_fail "verify_chain_data accepted a chain lacking layer 2's pattern"
fi
if (qemu_io_check -r "$neg" "read -P 0x11 0 1M") 2>/dev/null; then
	it_fail "qemu_io_check accepted pattern 0x11 where layer 0 wrote 0x10"
fi
rm -f "$T/.fail-reason"

# ---- -blockdev VM
a=$(mk_chain "$T/img" bda 1 64M)
b=$(mk_chain "$T/img" bdb 3 64M)
start_vm_blockdev bd "$a" "$b"
check_vm_block bd "vda|vdb" "|" "$a" "$b"
nodes=$(check_named_nodes "$T/bd.qmp" "$a" "$b")
it_assert_eq "$(jq -r --arg f "$a" '.return[] | select(.drv == "qcow2" and .file == $f) | ."node-name"' <<<"$nodes")" \
	vda-top "bd: node name of vda's top"
if err=$(qmp_raw "$T/bd.qmp" '{"execute":"query-version"}' '{"execute":"no-such-command"}' 2>/dev/null); then
	it_fail "qmp_raw returned success for an unknown command"
fi
it_assert_eq "$(jq -sc '[.[0].return.qemu.major >= 7, .[1].error.class]' <<<"$err")" '[true,"CommandNotFound"]' \
	"qmp_raw replies to query-version + unknown command"
hmp_write "$T/bd.qmp" vda 0xa1 "$LIVE_OFF" 1M
hmp_write "$T/bd.qmp" vdb 0xb1 "$LIVE_OFF" 1M
stop_vm bd
check_offline "$a" bda 1 0xa1
check_offline "$b" bdb 3 0xb1

# ---- -drive VM
a=$(mk_chain "$T/img" dra 1 64M)
b=$(mk_chain "$T/img" drb 3 64M)
start_vm_drive dr "$a" "$b"
check_vm_block dr "virtio-disk0|virtio-disk1" "drive-virtio-disk0|drive-virtio-disk1" "$a" "$b"
check_named_nodes "$T/dr.qmp" "$a" "$b" >/dev/null
hmp_write "$T/dr.qmp" virtio-disk0 0xa2 "$LIVE_OFF" 1M
hmp_write "$T/dr.qmp" virtio-disk1 0xb2 "$LIVE_OFF" 1M
stop_vm dr
check_offline "$a" dra 1 0xa2
check_offline "$b" drb 3 0xb2

# ---- qemu-storage-daemon
a=$(mk_chain "$T/img" qsa 1 64M)
b=$(mk_chain "$T/img" qsb 3 64M)
start_qsd qs "$a" "$b"
nodes=$(check_named_nodes "$T/qs.qmp" "$a" "$b")
for i in 0 1; do
	top=$a
	((i == 0)) || top=$b
	it_assert_eq "$(jq -r --arg n "disk$i" '.return[] | select(."node-name" == $n) | .file' <<<"$nodes")" \
		"$top" "qs: file of node disk$i"
done
exports=$(qmp_raw "$T/qs.qmp" '{"execute":"query-block-exports"}')
it_assert_eq "$(jq -c '[.return[] | [.id, ."node-name", .type]] | sort' <<<"$exports")" \
	'[["exp0","disk0","nbd"],["exp1","disk1","nbd"]]' "qs: exports"
nbd_write "$IT_NBD" disk0 0xa3 "$LIVE_OFF" 1M
nbd_write "$IT_NBD" disk1 0xb3 "$LIVE_OFF" 1M
stop_vm qs
check_offline "$a" qsa 1 0xa3
check_offline "$b" qsb 3 0xb3

it_pass
