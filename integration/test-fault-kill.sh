#!/usr/bin/env bash
# test-fault-kill: livemerge SIGKILLed at every step of a 2-disk quiesced snapshot and of a
# 2-disk active commit, with the real guest writing to both disks throughout; then
# `livemerge recover`, which must leave:
#   - every chain exactly as before or exactly as expected (livemerge --json chain against the
#     chains before the operation): a snapshot rolled back up to its transaction and kept after
#     it; a commit cancelled before its first journaled finalize and finished after it, all
#     disks alike;
#   - no job in query-jobs, the guest thawed (guest-fsfreeze-status), overlays of a rolled
#     back snapshot and --delete'd images gone;
#   - every acknowledged write there (the checker, live), and the guest still writing;
#   - and a second `recover` that changes nothing ("nothing to recover", same chains, the
#     journal byte for byte the same).
# Kill points: LIVEMERGE_CRASH_AT (SIGKILL right after the step's journal entry is on disk,
# before its command is sent) for intent / freeze / snapshot / thaw, start#2, complete#1,
# finalize#1, finalize#2, dismiss#1, delete#1; and an external kill -9 the moment
# livemerge's --json output shows a job running, waiting (after job-complete) or concluded
# (after finalize), which crash points cannot reach. Last, the next verb run after a crash
# (not recover) reconciles first by itself: a commit killed while pending, then a snapshot;
# a snapshot killed while the guest is frozen, then a commit. Offline checks after quit.
# it-timeout: 600
# (about 30 kill points, each with a recover and a live data check: past 300 s on a busy machine)
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
# shellcheck source=integration/lib-fault.sh
. "$IT_DIR/lib-fault.sh"
fault_setup

SIZE=24M
for d in vda vdb; do
	qemu-img create -q -f qcow2 "$T/img/$d.0.qcow2" "$SIZE"
done
guest_mkfs "$T/img/vdc.qcow2" 32M
start_guest g -f "$T/img/vdc.qcow2" "$T/img/vda.0.qcow2" "$T/img/vdb.0.qcow2"
FLM_TARGET=$T/g.qmp
QGA=unix:$T/g.qga
K=0

# ---------------------------------------------------------------- helpers

# last_step: the last step the journal holds (what the crash point must have been).
last_step() {
	fault_journal_steps | awk '{ print $NF }'
}

# after_crash WHAT BEFORE EXPECT OUTCOME: recover and check everything (see the top).
# OUTCOME: before | expect | journal (expect if the journal has a finalize, else before).
after_crash() {
	local what=$1 before=$2 expect=$3 outcome=$4 steps want now sum1 msgs
	fault_injected "$what"
	steps=$(fault_journal_steps)
	if [[ $outcome == journal ]]; then
		outcome=before
		[[ " $steps " != *" finalize "* ]] || outcome=expect
	fi
	want=$before
	[[ $outcome == before ]] || want=$expect
	flm_expect 0 recover
	msgs=$(flm_messages)
	grep -q '^recovered: ' <<<"$msgs" || it_fail "$what: recover did not reconcile: $msgs"
	if [[ $outcome == before ]]; then
		grep -q '^recovered: the operation is rolled back' <<<"$msgs" || it_fail "$what: expected a roll-back: $msgs"
	else
		grep -q '^recovered: the operation is finished' <<<"$msgs" || it_fail "$what: expected it finished: $msgs"
	fi
	now=$(fault_chains vda vdb)
	it_assert_eq "$now" "$want" "$what: chains after recover (journal: $steps)"
	it_assert_eq "$(fault_jobs)" "[]" "$what: query-jobs after recover"
	it_assert_eq "$(fault_fsfreeze g)" thawed "$what: guest-fsfreeze-status after recover"
	sum1=$(sha256sum <"$(fault_journal)")
	flm_expect 0 recover
	flm_messages | grep -q 'nothing to recover' || it_fail "$what: a second recover did something: $(flm_messages)"
	it_assert_eq "$(fault_chains vda vdb)" "$want" "$what: chains after a second recover"
	it_assert_eq "$(sha256sum <"$(fault_journal)")" "$sum1" "$what: the journal after a second recover"
	it_assert_eq "$(fault_jobs)" "[]" "$what: query-jobs after a second recover"
	fault_writing g vda vdb
	fault_check_live g vda vdb
	it_log "$what: journal [$steps] -> $outcome; $(flm_messages | grep -c .) lines from the second recover"
	OUTCOME=$outcome
}

# snap_crash STEP FREEZE_STATE OUTCOME: a quiesced snapshot of vda and vdb killed at STEP;
# the guest must be FREEZE_STATE (frozen/thawed/any) right after the kill.
snap_crash() {
	local step=$1 fz=$2 outcome=$3 before expect a b st
	K=$((K + 1))
	a=$T/img/vda.s$K.qcow2
	b=$T/img/vdb.s$K.qcow2
	before=$(fault_chains vda vdb)
	expect=$(jq -c --arg a "$a" --arg b "$b" '.vda = [$a] + .vda | .vdb = [$b] + .vdb' <<<"$before")
	FLM_CRASH=$step flm_expect 137 snapshot "vda=$a" "vdb=$b" --quiesce "$QGA"
	it_assert_eq "$(last_step)" "${step%#*}" "snapshot killed at $step: the journal's last step"
	if [[ $fz != any ]]; then
		st=$(fault_fsfreeze g)
		it_assert_eq "$st" "$fz" "snapshot killed at $step: the guest"
		it_log "snapshot killed at $step: guest $st before recover"
	fi
	after_crash "snapshot@$step" "$before" "$expect" "$outcome"
	[[ $OUTCOME != before ]] || fault_assert_gone "$a" "$b"
	[[ $OUTCOME != expect ]] || [[ -f $a && -f $b ]] || it_fail "snapshot@$step: overlays missing"
}

# ensure_top: vda and vdb have a layer to commit (a plain snapshot if not), with data in it.
ensure_top() {
	local n
	n=$(fault_chains vda | jq '.vda | length')
	if ((n < 2)); then
		K=$((K + 1))
		flm_expect 0 snapshot "vda=$T/img/vda.s$K.qcow2" "vdb=$T/img/vdb.s$K.qcow2"
	fi
	fault_writing g vda vdb
}

# commit_fault WHAT OUTCOME crash STEP [ARGS...] | kill GLOB [ARGS...]: an active commit of vda
# and vdb (ARGS: more commit options) killed at a crash point or by kill -9 on a line.
commit_fault() {
	local what=$1 outcome=$2 mode=$3 arg=$4 before expect jobs try
	shift 4
	for try in 1 2 3; do
		ensure_top
		before=$(fault_chains vda vdb)
		expect=$(jq -c 'map_values(.[1:])' <<<"$before")
		if [[ $mode == crash ]]; then
			FLM_CRASH=$arg flm_expect 137 commit vda vdb "$@"
			it_assert_eq "$(last_step)" "${arg%#*}" "commit killed at $arg: the journal's last step"
			break
		fi
		flm_kill_on "$arg" commit vda vdb "$@"
		((FLM_KILLED == 0)) || break
		# the kill came after livemerge had finished: that commit must be a plain success
		((FLM_RC == 0)) || it_fail "commit $what: livemerge ended by itself before the kill: $(flm__report)"
		it_assert_eq "$(fault_chains vda vdb)" "$expect" "commit $what (finished before the kill)"
		it_log "commit $what: livemerge had finished before the kill reached it (try $try): again"
		((try < 3)) || it_fail "commit $what: three times livemerge finished before the kill reached it"
	done
	jobs=$(fault_jobs)
	it_log "commit $what: killed after journal step '$(last_step)'; QEMU's jobs then: $jobs"
	after_crash "commit@$what" "$before" "$expect" "$outcome"
	if [[ " $* " == *" --delete "* ]]; then
		fault_assert_gone "$(jq -r .vda[0] <<<"$before")" "$(jq -r .vdb[0] <<<"$before")"
	fi
}

# ---------------------------------------------------------------- snapshot
t0=$SECONDS
snap_crash intent thawed before   # before the freeze
snap_crash freeze any before      # the freeze journaled, maybe not sent
snap_crash snapshot frozen before # after the freeze, before the transaction
snap_crash thaw frozen expect     # after the transaction, before the thaw
it_log "snapshot kill points done in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- active commit
t0=$SECONDS
commit_fault start#2 before crash start#2
commit_fault running before kill '*"status":"running","offset":[1-9]*' --speed 64K
commit_fault ready before crash complete#1
commit_fault after-complete journal kill '*"status":"waiting"*'
# all pending, flushing what the jobs wrote: before the pivot point, nothing changes
commit_fault flushing before crash flush#2
commit_fault pending expect crash finalize#1
commit_fault after-finalize#1 expect crash finalize#2
commit_fault concluded expect kill '*"status":"concluded"*'
commit_fault before-dismiss expect crash dismiss#1
# after the pivot, flushing the rewritten headers: recover flushes and finishes
commit_fault settling expect crash flush#3 --delete
# (no release point here: the committed overlays were opened by QEMU itself for the
# snapshot, QEMU drops their nodes, and livemerge releases only nodes QEMU still holds)
commit_fault before-delete expect crash delete#1 --delete
it_log "commit kill points done in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- the next verb recovers first
t0=$SECONDS
ensure_top
before=$(fault_chains vda vdb)
FLM_CRASH=finalize#1 flm_expect 137 commit vda vdb
fault_injected "next-verb:commit@finalize#1"
K=$((K + 1))
a=$T/img/vda.s$K.qcow2
b=$T/img/vdb.s$K.qcow2
want=$(jq -c --arg a "$a" --arg b "$b" 'map_values(.[1:]) | .vda = [$a] + .vda | .vdb = [$b] + .vdb' <<<"$before")
flm_expect 0 snapshot "vda=$a" "vdb=$b" --quiesce "$QGA"
flm_messages | grep -q 'unfinished commit' || it_fail "snapshot after a killed commit did not recover it first: $(flm_messages)"
flm_messages | grep -q '^recovered: the operation is finished' || it_fail "the killed commit was not finished: $(flm_messages)"
it_assert_eq "$(fault_chains vda vdb)" "$want" "commit killed while pending, then a snapshot"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after the next verb"
it_assert_eq "$(fault_fsfreeze g)" thawed "the guest after the next verb"
fault_check_live g vda vdb

before=$(fault_chains vda vdb)
K=$((K + 1))
FLM_CRASH=snapshot flm_expect 137 snapshot "vda=$T/img/vda.s$K.qcow2" "vdb=$T/img/vdb.s$K.qcow2" --quiesce "$QGA"
fault_injected "next-verb:snapshot@snapshot"
it_assert_eq "$(fault_fsfreeze g)" frozen "the guest after a snapshot killed before its transaction"
want=$(jq -c 'map_values(.[1:])' <<<"$before")
flm_expect 0 commit vda vdb --delete
flm_messages | grep -q 'unfinished snapshot' || it_fail "commit after a killed snapshot did not recover it first: $(flm_messages)"
flm_messages | grep -q '^guest thawed' || it_fail "commit after a killed snapshot did not thaw the guest: $(flm_messages)"
it_assert_eq "$(fault_chains vda vdb)" "$want" "snapshot killed while frozen, then a commit"
fault_assert_gone "$T/img/vda.s$K.qcow2" "$T/img/vdb.s$K.qcow2"
it_assert_eq "$(fault_fsfreeze g)" thawed "the guest after the next verb"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after the next verb"
fault_check_live g vda vdb
it_log "next-verb recovery done in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- offline, after quit
final=$(fault_chains vda vdb)
it_log "final chains: $final"
stop_guest g
grep -q '^ERR' "$T/g.ack" && it_fail "the guest's writer reported errors: $(grep -m1 '^ERR' "$T/g.ack")"
fault_check_offline g vda "$(jq -r '.vda[0]' <<<"$final")"
fault_check_offline g vdb "$(jq -r '.vdb[0]' <<<"$final")"
mapfile -t imgs < <(jq -r '.[][]' <<<"$final")
fault_qemu_img_check "${imgs[@]}"
fault_figures
it_pass
