#!/usr/bin/env bash
# test-merge-allornone: multi-disk active commits pivot all disks or none, against a real
# -blockdev VM with 4 disks and a second QMP monitor for actions from outside.
#
# Each disk gets an overlay with live data; vdc's is 32 MiB, the others' 1 MiB, and the
# commits run at --speed 4M, so vdc's job runs for seconds after the others are READY.
# 1. 4-disk commit; vda, vdb, vdd READY, vdc running: vdc's job is cancelled from outside
#    (job-cancel on the second monitor) -> exit 1, no disk pivoted, QEMU's block state (chains,
#    nodes, jobs) as before, query-jobs empty, data intact.
# 2. 2-disk commit (vda, vdc); vda READY, vdc running: vda's READY job is cancelled from
#    outside -> the same.
# 3. 4-disk commit; SIGINT to livemerge once vda is READY -> every job cancelled, exit 1,
#    the same.
# 4. 2-disk stream (vda, vdc; vdc pulls 12 MiB from its base) at --speed 4M: vda's job done
#    (PENDING), vdc's running: vdc's job is cancelled from outside -> exit 1, the same (and
#    QEMU still runs).
# 5. The same stream, SIGINT to livemerge -> exit 1, the same.
# 6. Then the 4-disk commit runs undisturbed (no --speed): exit 0, every disk pivots;
#    data intact live and offline (read -P, qemu-img compare against a raw reference).
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
c=$(mk_chain "$I" c 1 $SIZE)
d=$(mk_chain "$I" d 1 $SIZE)
exp_chain a 1
exp_chain b 2
exp_chain c 1
exp_chain d 1
# 12 MiB in c's base, for a slow stream of vdc
qemu_io_check "$I/c.0.qcow2" "write -P 0x3c 48M 12M"
exp_add c 0x3c 48M 12M
start_vm_2mon vm "$a" "$b" "$c" "$d"
LM_SOCK=$T/vm.qmp
MON2=$T/vm.qmp2

lm_ok snapshot "vda=$I/a.s.qcow2" "vdb=$I/b.s.qcow2" "vdc=$I/c.s.qcow2" "vdd=$I/d.s.qcow2"
live_write vm vda a 0xa1 8M 1M
live_write vm vdb b 0xb1 8M 1M
live_write vm vdc c 0xc1 16M 32M
live_write vm vdd d 0xd1 8M 1M
CHAINS=$(for v in vda vdb vdc vdd; do lm_chain $v; done)
BEFORE=$(state_of "$LM_SOCK")

# bg_commit NAME ARGS...: run livemerge ARGS against the first monitor in the background
# (pid in BG, output in $T/NAME.lmout / .lmerr).
bg_commit() {
	local name=$1
	shift
	it_log "\$ livemerge -c $LM_SOCK $* &"
	"$LM" -c "$LM_SOCK" "$@" >"$T/$name.lmout" 2>"$T/$name.lmerr" </dev/null &
	BG=$!
	it_track "$name" "$BG"
}

# bg_wait NAME WANT: wait (60 s at most) for the background livemerge; fail unless it exits
# WANT.
bg_wait() {
	local name=$1 want=$2 rc=0 n=600
	while ((n-- > 0)) && kill -0 "$BG" 2>/dev/null; do
		sleep 0.1
	done
	kill -0 "$BG" 2>/dev/null && it_fail "$name: livemerge still runs after 60 s"
	wait "$BG" || rc=$?
	rm -f "$T/$name.pid"
	sed 's/^/    stderr: /' "$T/$name.lmerr" >&2
	((rc == want)) || it_fail "$name: livemerge exit $rc, expected $want: stderr: $(head -n 5 "$T/$name.lmerr")"
}

# unchanged WHAT: no disk pivoted, nothing in QEMU changed, no job left, data intact.
unchanged() {
	local now
	now=$(for v in vda vdb vdc vdd; do lm_chain $v; done)
	it_assert_eq "$now" "$CHAINS" "$1: chains"
	assert_state_unchanged "$LM_SOCK" "$BEFORE" "$1"
	assert_no_jobs "$LM_SOCK" "$1"
	live_check vm vda:a vdb:b vdc:c vdd:d
	assert_exist "$I/a.s.qcow2" "$I/b.s.qcow2" "$I/c.s.qcow2" "$I/d.s.qcow2"
}

# ---- 1. the slow job cancelled from outside while the others are READY
bg_commit ext1 --json commit vda vdb vdc vdd --speed 4M
for v in vda vdb vdd; do
	wait_job_status "$MON2" "livemerge-commit-$v" ready 20
done
it_assert_eq "$(job_status "$MON2" livemerge-commit-vdc)" running "vdc's job while the others are ready"
qmpq "$MON2" '{"execute":"job-cancel","arguments":{"id":"livemerge-commit-vdc"}}' >/dev/null ||
	it_fail "job-cancel of vdc's job on the second monitor refused"
bg_wait ext1 1
it_assert_eq "$(jq -c 'select(.type == "result") | [.ok, .outcome]' "$T/ext1.lmout")" '[false,1]' \
	"external cancel of a running job: result line"
unchanged "external cancel of vdc's running job"

# ---- 2. a READY job cancelled from outside while another still runs
bg_commit ext2 --json commit vda vdc --speed 4M
wait_job_status "$MON2" livemerge-commit-vda ready 20
it_assert_eq "$(job_status "$MON2" livemerge-commit-vdc)" running "vdc's job while vda's is ready"
qmpq "$MON2" '{"execute":"job-cancel","arguments":{"id":"livemerge-commit-vda"}}' >/dev/null ||
	it_fail "job-cancel of vda's job on the second monitor refused"
bg_wait ext2 1
unchanged "external cancel of vda's ready job"

# ---- 3. SIGINT
bg_commit int commit vda vdb vdc vdd --speed 4M
wait_job_status "$MON2" livemerge-commit-vda ready 20
it_assert_eq "$(job_status "$MON2" livemerge-commit-vdc)" running "vdc's job before SIGINT"
kill -INT "$BG"
bg_wait int 1
unchanged "SIGINT during the commit"

# ---- 4. stream: vdc's job cancelled from outside while vda's is done (pending)
bg_commit sext --json stream vda vdc --speed 4M
wait_job_status "$MON2" livemerge-stream-vda pending 20
it_assert_eq "$(job_status "$MON2" livemerge-stream-vdc)" running "vdc's stream job while vda's is pending"
qmpq "$MON2" '{"execute":"job-cancel","arguments":{"id":"livemerge-stream-vdc"}}' >/dev/null
bg_wait sext 1
kill -0 "$(proc_pid vm)" || it_fail "QEMU died during the stream rollback: $(tail -n 2 "$T/vm.err")"
unchanged "external cancel of vdc's stream job"

# ---- 5. stream: SIGINT while vda's job is pending and vdc's runs
bg_commit sint stream vda vdc --speed 4M
wait_job_status "$MON2" livemerge-stream-vda pending 20
it_assert_eq "$(job_status "$MON2" livemerge-stream-vdc)" running "vdc's stream job before SIGINT"
kill -INT "$BG"
bg_wait sint 1
kill -0 "$(proc_pid vm)" || it_fail "QEMU died during the stream rollback: $(tail -n 2 "$T/vm.err")"
unchanged "SIGINT during the stream"

# ---- 6. undisturbed (full speed)
bg_commit ok --json commit vda vdb vdc vdd
bg_wait ok 0
assert_chain vda "$a" "$I/a.0.qcow2"
assert_chain vdb "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
assert_chain vdc "$c" "$I/c.0.qcow2"
assert_chain vdd "$d" "$I/d.0.qcow2"
assert_no_jobs "$LM_SOCK" "commit of 4"
live_write vm vdc c 0xc2 9M 1M
live_check vm vda:a vdb:b vdc:c vdd:d

stop_vm vm
check_offline a "$a" $SIZE
check_offline b "$b" $SIZE
check_offline c "$c" $SIZE
check_offline d "$d" $SIZE
it_pass
