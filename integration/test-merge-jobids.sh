#!/usr/bin/env bash
# test-merge-jobids: livemerge's deterministic job ids already taken in QEMU, against a real
# -blockdev VM with 2 disks (vda: depth 1 + an overlay with live data, vdb: depth 2) and a
# second QMP monitor.
#
# 1. A running job named livemerge-commit-vda, started by hand with `livemerge qmp
#    block-commit` (auto-finalize off, speed 1 B/s): `commit vda` -> exit 2, one error line
#    naming the job, the job still running, nothing else changed. `livemerge jobs` lists it
#    (disk, type, status, speed); `livemerge cancel` ends it (0): no job left, chain as before.
# 2. The same for livemerge-stream-vdb (block-stream by hand) and `stream vdb`.
# 3. A leftover CONCLUDED job named livemerge-commit-vda (started by hand with auto-dismiss
#    off, then cancelled): README says it is reported and dismissed; `commit vda` then
#    commits: exit 0, vda pivots, no job left.
# 4. The same for a concluded livemerge-stream-vdb and `stream vdb`: exit 0, flattened.
# Data is read back live after every step and offline at the end.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
lm_setup

SIZE=64M
I=$T/img
a=$(mk_chain "$I" a 1 $SIZE)
b=$(mk_chain "$I" b 2 $SIZE)
exp_chain a 1
exp_chain b 2
start_vm_2mon vm "$a" "$b"
LM_SOCK=$T/vm.qmp
MON2=$T/vm.qmp2
lm_ok snapshot "vda=$I/a.s.qcow2"
live_write vm vda a 0xa1 8M 4M
live_write vm vdb b 0xb1 8M 1M
ov=$(lm_node vda 0)

# by_hand VERB JOB DEVICE [EXTRA-JSON]: start a job by hand (speed 1 B/s, auto-finalize off),
# wait until it runs.
by_hand() {
	local args
	args=$(jq -nc --arg j "$2" --arg d "$3" --argjson x "${4:-{\}}" \
		'{"job-id": $j, device: $d, "auto-finalize": false, speed: 1} + $x')
	lm_ok qmp "$1" "$args"
	wait_job_status "$MON2" "$2" running 10
}

# leftover_reported JOB: the last --json run reported, in one message line, that it found the
# concluded JOB and dismissed it (a cancelled job's error is named with it).
leftover_reported() {
	local msgs
	msgs=$(jq -r 'select(.type == "message") | .message' "$T/lm.out") || it_fail "stdout is not JSON lines: $(lm_report)"
	grep -qxE "dismissing leftover concluded job $1 \\(.+\\)" <<<"$msgs" ||
		it_fail "no message that the leftover job $1 was dismissed; messages: ${msgs//$'\n'/; }"
	it_log "reported: $(grep -F "job $1 " <<<"$msgs")"
}

# ---- 1. a running commit job with our id
by_hand block-commit livemerge-commit-vda "$ov"
before=$(state_of "$LM_SOCK")
lm_expect 2 commit vda
lm_one_line_error livemerge-commit-vda
assert_state_unchanged "$LM_SOCK" "$before" "commit vda while livemerge-commit-vda runs"
it_assert_eq "$(job_status "$MON2" livemerge-commit-vda)" running "the hand-made job after the refused commit"
lm_ok --json jobs
it_assert_eq "$(jq -c 'select(.job == "livemerge-commit-vda") | [.disk, ."job-type", .status, .speed]' "$T/lm.out")" \
	'["vda","commit","running",1]' "livemerge jobs: the hand-made commit job"
lm_ok cancel livemerge-commit-vda
assert_no_jobs "$LM_SOCK" "livemerge cancel livemerge-commit-vda"
assert_chain vda "$I/a.s.qcow2" "$a" "$I/a.0.qcow2"
live_check vm vda:a vdb:b

# ---- 2. a running stream job with our id
by_hand block-stream livemerge-stream-vdb vdb-top
before=$(state_of "$LM_SOCK")
lm_expect 2 stream vdb
lm_one_line_error livemerge-stream-vdb
assert_state_unchanged "$LM_SOCK" "$before" "stream vdb while livemerge-stream-vdb runs"
lm_ok --json jobs
it_assert_eq "$(jq -c 'select(.job == "livemerge-stream-vdb") | [.disk, ."job-type", .status, .speed]' "$T/lm.out")" \
	'["vdb","stream","running",1]' "livemerge jobs: the hand-made stream job"
lm_ok cancel livemerge-stream-vdb
assert_no_jobs "$LM_SOCK" "livemerge cancel livemerge-stream-vdb"
assert_chain vdb "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
live_check vm vda:a vdb:b

# ---- 3. a concluded commit job of ours is dismissed, and the commit goes on
by_hand block-commit livemerge-commit-vda "$ov" '{"auto-dismiss": false}'
lm_ok qmp job-cancel '{"id": "livemerge-commit-vda"}'
wait_job_status "$MON2" livemerge-commit-vda concluded 10
lm_ok --json commit vda
leftover_reported livemerge-commit-vda
assert_chain vda "$a" "$I/a.0.qcow2"
assert_no_jobs "$LM_SOCK" "commit over a concluded job of ours"
live_check vm vda:a vdb:b

# ---- 4. a concluded stream job of ours is dismissed, and the stream goes on
by_hand block-stream livemerge-stream-vdb vdb-top '{"auto-dismiss": false}'
lm_ok qmp job-cancel '{"id": "livemerge-stream-vdb"}'
wait_job_status "$MON2" livemerge-stream-vdb concluded 10
lm_ok --json stream vdb
leftover_reported livemerge-stream-vdb
assert_chain vdb "$b"
assert_no_jobs "$LM_SOCK" "stream over a concluded job of ours"
live_write vm vda a 0xa2 12M 1M
live_write vm vdb b 0xb2 12M 1M
live_check vm vda:a vdb:b

stop_vm vm
check_offline a "$a" $SIZE
check_offline b "$b" $SIZE
it_pass
