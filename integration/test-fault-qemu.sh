#!/usr/bin/env bash
# test-fault-qemu: QEMU SIGKILLed in the middle of a 2-disk active commit and of a 2-disk
# stream (--speed keeps the jobs running), with the guest writing to both disks:
#   - livemerge exits 4 after its bounded reconnects, with a message that says what to do
#     (run `livemerge recover` once the VM runs again);
#   - qemu-img check finds no corruption in any image;
#   - the chain the journal says is active (the chains before: nothing was finalized) holds
#     every write the guest acknowledged before it died (the checker, offline);
#   - QEMU restarted on that chain, `livemerge recover` (as the message says) reconciles the
#     vanished jobs from the live chains: rolled back, no job left; the guest writes on and the
#     checker passes live; a second recover has nothing to do.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
# shellcheck source=integration/lib-fault.sh
. "$IT_DIR/lib-fault.sh"
fault_setup

for d in vda vdb; do
	qemu-img create -q -f qcow2 "$T/img/$d.0.qcow2" 24M
done
start_guest g "$T/img/vda.0.qcow2" "$T/img/vdb.0.qcow2"
FLM_TARGET=$T/g.qmp
fault_writing g vda vdb

# journal_active DISK: the active file of DISK by the journal's last operation: its expected
# chain if a finalize was journaled, else the chain before.
journal_active() {
	jq -rsR --arg d "$1" '[split("\n")[] | fromjson?] | (map(.op) | max) as $op
		| [.[] | select(.op == $op)] as $e
		| ($e | any(.step == "finalize")) as $fin
		| $e[0].disks[] | select(.disk == $d) | (if $fin then .expect else .before end)[0]' "$(fault_journal)"
}

# kill_qemu_mid VERB ARGS...: run livemerge VERB vda vdb ARGS in the background, SIGKILL QEMU
# once both jobs copy, check livemerge's exit and message, the images and the data, restart
# QEMU on the active chain and recover.
kill_qemu_mid() {
	local verb=$1 before pid start t0 secs a b f result
	shift
	before=$(fault_chains vda vdb)
	flm_bg "$verb" vda vdb --speed 64K "$@"
	flm_wait_line '*"disk":"vda"*"status":"running","offset":[1-9]*' 30
	flm_wait_line '*"disk":"vdb"*"status":"running","offset":[1-9]*' 30
	sleep 0.5
	read -r pid start <"$T/g.pid"
	it__same_process "$pid" "$start" || it_fail "QEMU is not running"
	kill -KILL "$pid"
	t0=$(date +%s%N)
	wait "$pid" 2>/dev/null || true
	rm -f "$T/g.pid"
	fault_injected "qemu-killed-mid-$verb"
	it_log "$verb: QEMU SIGKILLed with acks vda $(guest_last_ack g vda), vdb $(guest_last_ack g vdb)"
	flm_bg_wait 90
	secs=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
	it_log "$verb: livemerge exit $FLM_RC $secs s after QEMU died: $(tail -n 1 "$T/flm.err")"
	((FLM_RC == 4)) || it_fail "$verb with QEMU killed: expected exit 4: $(flm__report)"
	grep -q "livemerge recover" "$T/flm.err" || it_fail "$verb with QEMU killed: the message does not say what to run: $(cat "$T/flm.err")"
	# no result line (it may die before one), or one that says 4
	result=$(flm_result)
	[[ -z $result || $(jq .outcome <<<"$result") == 4 ]] || it_fail "$verb: result line says $result"

	# every image of the chains before (the commit's base too) is sound on disk
	mapfile -t imgs < <(jq -r '.[][]' <<<"$before" | sort -u)
	fault_qemu_img_check "${imgs[@]}"
	a=$(journal_active vda)
	b=$(journal_active vdb)
	it_assert_eq "$(jq -c --arg a "$a" --arg b "$b" '[.vda[0] == $a, .vdb[0] == $b]' <<<"$before")" \
		"[true,true]" "$verb: the journal's active layers are the chains' tops before"
	fault_check_offline g vda "$a"
	fault_check_offline g vdb "$b"

	# the VM runs again on its active chain; recover as the message says
	rm -f "$T/g.qmp" "$T/g.qga" "$T/g.nbd"
	start_guest g "$a" "$b"
	flm_expect 0 recover
	flm_messages | grep -q '^recovered: the operation is rolled back' ||
		it_fail "$verb: recover after QEMU's death: $(flm_messages)"
	it_assert_eq "$(fault_chains vda vdb)" "$before" "$verb: chains after QEMU's death and recover"
	it_assert_eq "$(fault_jobs)" "[]" "$verb: jobs after recover"
	flm_expect 0 recover
	flm_messages | grep -q 'nothing to recover' || it_fail "$verb: a second recover did something: $(flm_messages)"
	fault_writing g vda vdb
	fault_check_live g vda vdb
	for f in "${imgs[@]}"; do
		[[ -f $f ]] || it_fail "$verb: $f is gone"
	done
}

# ---------------------------------------------------------------- mid-commit
flm_expect 0 snapshot "vda=$T/img/vda.1.qcow2" "vdb=$T/img/vdb.1.qcow2"
fault_writing g vda vdb
t0=$SECONDS
kill_qemu_mid commit
it_log "mid-commit done in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- mid-stream
# the base holds the ring written before the snapshot: stream pulls it up
t0=$SECONDS
kill_qemu_mid stream
it_log "mid-stream done in $((SECONDS - t0)) s"

final=$(fault_chains vda vdb)
stop_guest g
grep -q '^ERR' "$T/g.ack" && it_fail "the guest's writer reported errors: $(grep -m1 '^ERR' "$T/g.ack")"
fault_check_offline g vda "$(jq -r '.vda[0]' <<<"$final")"
fault_check_offline g vdb "$(jq -r '.vdb[0]' <<<"$final")"
it_log "qemu-img check: $FAULT_LEAKS leaked clusters in all (leaks are not corruption)"
fault_figures
it_pass
