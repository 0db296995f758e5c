#!/usr/bin/env bash
# test-durable-guest: the booted test guest writes to vda (10 blocks/s, one fdatasync a
# second, so QEMU is left alone between them as with a mostly idle guest) while its chain is
# merged; QEMU is SIGKILLed the moment livemerge reports success, and offline the guest's
# checker finds every acknowledged write through the new top, and qemu-img check finds no
# corruption. Three merges, each on a guest of its own booted on an empty vda.0, with two
# snapshots taken (vda.0 <- vda.1 <- vda.2) and written into:
#   stream vda --delete              vda.2 alone
#   commit vda --top vda.1 --delete  vda.2 <- vda.0 (intermediate)
#   commit vda --delete              vda.1 <- vda.0 (active)
# Every merge runs; the verdict names each one that failed.
# shellcheck disable=SC2317 # (functions run through dur_run)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
# shellcheck source-path=SCRIPTDIR source=lib-fault.sh
. "$IT_DIR/lib-fault.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-durable.sh
. "$IT_DIR/lib-durable.sh"
fault_setup
GUEST_APPEND="lm.batch=10${GUEST_APPEND:+ $GUEST_APPEND}"

# snap NAME FILE: a snapshot of vda onto FILE, then 15 more acknowledged blocks.
snap() {
	flm_expect 0 snapshot "vda=$2"
	fault_writing "$1" vda
	guest_wait_ack "$1" vda $(($(guest_last_ack "$1" vda) + 5)) 20
}

# scenario NAME NEWTOP ARGS...: a guest NAME on $T/img/NAME/vda.0 <- vda.1 <- vda.2, written
# into all along; livemerge ARGS must exit 0 with NEWTOP (vda.N) as vda's top; SIGKILL QEMU
# at once; offline: qemu-img check of every image left, the checker through NEWTOP's chain.
scenario() {
	local name=$1 dir=$T/img/$1 newtop=$T/img/$1/$2 acked
	shift 2
	mkdir -p "$dir"
	qemu-img create -q -f qcow2 "$dir/vda.0.qcow2" 24M
	start_guest "$name" -r 10 "$dir/vda.0.qcow2"
	FLM_TARGET=$T/$name.qmp
	fault_writing "$name" vda
	snap "$name" "$dir/vda.1.qcow2"
	snap "$name" "$dir/vda.2.qcow2"
	flm "${@//@/$dir/}"
	dur_kill "$name"
	acked=$(guest_last_ack "$name" vda)
	it_log "$*: livemerge exit $FLM_RC; QEMU SIGKILLed with vda acked up to $acked"
	((FLM_RC == 0)) || it_fail "expected exit 0: $(flm__report)"
	it_assert_eq "$(flm_result | jq -r '.disks[] | select(.disk == "vda") | .chain[0].filename')" \
		"$newtop" "vda's top in livemerge's result"
	dur_img_check 0 "$dir"/*.qcow2
	! grep -q '^ERR' "$T/$name.ack" || it_fail "the guest's writer reported errors: $(grep -m1 '^ERR' "$T/$name.ack")"
	fault_check_offline "$name" vda "$newtop"
}

dur_run "stream vda --delete" g1 scenario g1 vda.2.qcow2 stream vda --delete
dur_run "commit vda --top vda.1 --delete" g2 scenario g2 vda.2.qcow2 commit vda --top @vda.1.qcow2 --delete
dur_run "commit vda --delete" g3 scenario g3 vda.1.qcow2 commit vda --delete
dur_verdict
