#!/usr/bin/env bash
# test-merge-layouts: the core sequence on a -blockdev VM and on a -drive VM, two disks each
# (chains of depth 1 and 2), naming the disks in every form README allows:
#   snapshot both (device ids) -> live writes land in the overlays
#   active commit both --delete (-blockdev: device id + active node name; -drive: block
#     backend names) -> both pivot back, overlays removed
#   stream both (qdev paths) -> both flattened
# with live writes after each step, read back live through the devices, and offline after
# QEMU stops (read -P and qemu-img compare against a raw reference). The chains are checked
# after each step through livemerge and through QEMU's query-block.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
lm_setup

SIZE=64M
I=$T/img

# core LAYOUT START Q0 Q1 B0 B1: LAYOUT names the VM and its images; START starts it; Q0/Q1 are
# the qdev ids, B0/B1 the block backend names ("" if anonymous).
core() {
	local L=$1 start=$2 q0=$3 q1=$4 b0=$5 b1=$6 x y ov0 ov1 n1 before f got
	x=$(mk_chain "$I" "$L-x" 1 $SIZE)
	y=$(mk_chain "$I" "$L-y" 2 $SIZE)
	exp_chain "$L-x" 1
	exp_chain "$L-y" 2
	"$start" "$L" "$x" "$y"
	LM_SOCK=$T/$L.qmp
	live_write "$L" "$q0" "$L-x" 0x51 8M 1M
	live_write "$L" "$q1" "$L-y" 0x61 8M 1M

	# snapshot
	ov0=$I/$L-x.s.qcow2
	ov1=$I/$L-y.s.qcow2
	lm_ok --json snapshot "$q0=$ov0" "$q1=$ov1"
	it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "$L: snapshot result"
	assert_chain "$q0" "$ov0" "$x" "$I/$L-x.0.qcow2"
	assert_chain "$q1" "$ov1" "$y" "$I/$L-y.1.qcow2" "$I/$L-y.0.qcow2"
	live_write "$L" "$q0" "$L-x" 0x52 9M 2M
	live_write "$L" "$q1" "$L-y" 0x62 9M 2M
	live_check "$L" "$q0:$L-x" "$q1:$L-y"

	# active commit, --delete
	if [[ -n $b0 ]]; then
		set -- "$b0" "$b1"
	else
		n1=$(lm_node "$q1" 0)
		set -- "$q0" "$n1"
	fi
	lm_ok --json commit "$@" --delete
	it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "$L: commit result"
	assert_chain "$q0" "$x" "$I/$L-x.0.qcow2"
	assert_chain "$q1" "$y" "$I/$L-y.1.qcow2" "$I/$L-y.0.qcow2"
	assert_gone "$ov0" "$ov1"
	assert_exist "$x" "$I/$L-x.0.qcow2" "$y" "$I/$L-y.1.qcow2" "$I/$L-y.0.qcow2"
	assert_no_jobs "$LM_SOCK" "$L: commit"
	live_write "$L" "$q0" "$L-x" 0x53 11M 1M
	live_write "$L" "$q1" "$L-y" 0x63 11M 1M
	live_check "$L" "$q0:$L-x" "$q1:$L-y"

	# stream (flatten)
	lm_ok --json stream "/machine/peripheral/$q0/virtio-backend" "/machine/peripheral/$q1/virtio-backend"
	it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "$L: stream result"
	assert_chain "$q0" "$x"
	assert_chain "$q1" "$y"
	assert_no_jobs "$LM_SOCK" "$L: stream"
	live_write "$L" "$q0" "$L-x" 0x54 12M 1M
	live_write "$L" "$q1" "$L-y" 0x64 12M 1M
	live_check "$L" "$q0:$L-x" "$q1:$L-y"

	stop_vm "$L"
	check_offline "$L-x" "$x" $SIZE
	check_offline "$L-y" "$y" $SIZE
	for f in "$x" "$y"; do
		got=$(image_backing "$f")
		it_assert_eq "$got" none "$L: $f flattened: backing file in its header"
	done
}

core bd start_vm_blockdev vda vdb "" ""
core dr start_vm_drive virtio-disk0 virtio-disk1 drive-virtio-disk0 drive-virtio-disk1
it_pass
