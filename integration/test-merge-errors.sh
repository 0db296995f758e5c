#!/usr/bin/env bash
# test-merge-errors: bad input and lost QEMU, against a real -blockdev VM with 3 disks (vda:
# depth 1 + an overlay, vdb: depth 2, vdc: a single image) and a second QMP monitor.
#
# Each refusal is checked for its exit code, exactly one "livemerge: ..." line on stderr
# naming the culprit, and QEMU's block state (chains, nodes, jobs) unchanged:
#   missing socket (3); unknown disk (2, also next to a good disk, also for snapshot and
#   stream, and no overlay file made); unknown layer for --top / --base (2); base above top
#   and base == top (2); commit on a single-layer chain (2); bad --speed, unknown option,
#   bad JSON for qmp (2, the error line first, a usage summary may follow); a disk named
#   twice, a non-active node as a disk, an unknown job to cancel, --top at the base, stream
#   of a single layer (2). (Job ids in use: test-merge-jobids.sh.)
# Last, QEMU is killed (SIGKILL) in the middle of a 2-disk commit: exit 4 with a message that
# says what to run or check; offline, both disks' chains are intact on disk and hold all data.
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
c=$(mk_chain "$I" c 0 $SIZE)
exp_chain a 1
exp_chain b 2
exp_chain c 0
start_vm_2mon vm "$a" "$b" "$c"
LM_SOCK=$T/vm.qmp
MON2=$T/vm.qmp2
lm_ok snapshot "vda=$I/a.s.qcow2"
live_write vm vda a 0xa1 8M 4M
ov=$(lm_node vda 0)

# refused CODE CULPRIT ARGS...: livemerge ARGS exits CODE with one error line naming CULPRIT
# (never empty: that would check no message) and nothing in QEMU changes.
refused() {
	local code=$1 culprit=$2 before
	shift 2
	[[ -n $culprit ]] || it_fail "refused $*: no CULPRIT to look for in the message"
	before=$(state_of "$LM_SOCK")
	lm_expect "$code" "$@"
	lm_one_line_error "$culprit"
	assert_state_unchanged "$LM_SOCK" "$before" "livemerge $*"
}

# misused CULPRIT ARGS...: a usage error: exit 2, the first line on stderr "livemerge: ..."
# naming CULPRIT (never empty; a usage summary may follow), nothing in QEMU changes.
misused() {
	local culprit=$1 before
	shift
	[[ -n $culprit ]] || it_fail "misused $*: no CULPRIT to look for in the message"
	before=$(state_of "$LM_SOCK")
	lm_expect 2 "$@"
	head -n 1 "$T/lm.err" | grep -qF -- "livemerge: " || it_fail "usage error without a 'livemerge: ' line first: $(lm_report)"
	head -n 1 "$T/lm.err" | grep -qF -- "$culprit" || it_fail "usage error does not name '$culprit': $(lm_report)"
	assert_state_unchanged "$LM_SOCK" "$before" "livemerge $*"
}

# ---- cannot connect
LM_SOCK=$T/no-such.qmp
lm_expect 3 commit vda
lm_one_line_error "$T/no-such.qmp"
lm_expect 3 snapshot "vda=$I/x.qcow2"
lm_one_line_error "$T/no-such.qmp"
assert_gone "$I/x.qcow2"
LM_SOCK=$T/vm.qmp

# ---- unknown disk
refused 2 nosuch commit nosuch
refused 2 nosuch commit vda nosuch
refused 2 nosuch stream nosuch
refused 2 nosuch snapshot "nosuch=$I/x.qcow2"
assert_gone "$I/x.qcow2"
refused 2 nosuch snapshot "vdb=$I/y.qcow2" "nosuch=$I/x.qcow2"
assert_gone "$I/x.qcow2" "$I/y.qcow2"

# ---- a disk named twice (two forms), a layer that is not a disk's active one
refused 2 vda commit vda /machine/peripheral/vda/virtio-backend
refused 2 vda snapshot "vda=$I/x.qcow2" "$ov=$I/y.qcow2"
assert_gone "$I/x.qcow2" "$I/y.qcow2"
refused 2 vda-top commit vda-top
refused 2 nosuch-job cancel nosuch-job

# ---- unknown layer
refused 2 nosuch-layer commit vdb --top nosuch-layer
refused 2 "$I/nosuch.qcow2" commit vdb --base "$I/nosuch.qcow2"
refused 2 nosuch-layer stream vdb --base nosuch-layer
refused 2 "$I/a.0.qcow2" commit vdb --base "$I/a.0.qcow2" # a layer of another disk

# ---- base above top, base == top
refused 2 "vdb: base $b is not below top $I/b.1.qcow2" commit vdb --top "$I/b.1.qcow2" --base "$b"
refused 2 "vdb: base $I/b.1.qcow2 is not below top $I/b.1.qcow2" commit vdb --top "$I/b.1.qcow2" --base "$I/b.1.qcow2"

# ---- nothing below top, nothing to do
refused 2 "vdb: top $I/b.0.qcow2 is the base of the chain: nothing below it" commit vdb --top "$I/b.0.qcow2"
refused 2 "vdc: its chain has a single layer: nothing to commit" commit vdc
refused 2 "vdc: its chain has a single layer: nothing to stream" stream vdc

# ---- malformed arguments
misused fast commit vda --speed fast
misused --no-such-option commit vda --no-such-option
misused "qmp: ARGUMENTS must be a JSON object: " qmp query-jobs '{"not json'

# ---- QEMU killed in the middle of a commit
lm_ok snapshot "vdb=$I/b.s.qcow2"
live_write vm vdb b 0xb1 8M 8M
live_write vm vda a 0xa2 16M 8M
# A SIGKILL loses what QEMU has not flushed (qcow2 metadata in its cache): flush, as a guest
# would, so every byte written must survive.
live_flush vm vda
live_flush vm vdb
it_log "\$ livemerge -c $LM_SOCK commit vda vdb --speed 1M &   (then SIGKILL to QEMU)"
"$LM" -c "$LM_SOCK" commit vda vdb --speed 1M >"$T/k.out" 2>"$T/k.err" </dev/null &
lmpid=$!
it_track lmkill "$lmpid"
wait_job_status "$MON2" livemerge-commit-vdb running 10
kill -KILL "$(proc_pid vm)"
rc=0
n=600
while ((n-- > 0)) && kill -0 "$lmpid" 2>/dev/null; do sleep 0.1; done
kill -0 "$lmpid" 2>/dev/null && it_fail "livemerge still runs 60 s after QEMU was killed"
wait "$lmpid" || rc=$?
sed 's/^/    stderr: /' "$T/k.err" >&2
((rc == 4)) || it_fail "livemerge commit vda vdb --speed 1M with QEMU killed: exit $rc, expected 4: $(grep '^livemerge:' "$T/k.err" | head -n 3)"
grep -qE "livemerge (recover|chain|jobs)" "$T/k.err" ||
	it_fail "exit 4 without naming what to run or check ('livemerge recover/chain/jobs'): $(grep '^livemerge:' "$T/k.err")"
# The chains on disk are the ones before the commit, and hold every byte.
it_assert_eq "$(qemu-img info --output=json --backing-chain "$I/a.s.qcow2" | jq -c '[.[].filename]')" \
	"$(files_json "$I/a.s.qcow2" "$a" "$I/a.0.qcow2")" "vda's chain on disk after the kill"
it_assert_eq "$(qemu-img info --output=json --backing-chain "$I/b.s.qcow2" | jq -c '[.[].filename]')" \
	"$(files_json "$I/b.s.qcow2" "$b" "$I/b.1.qcow2" "$I/b.0.qcow2")" "vdb's chain on disk after the kill"
check_offline a "$I/a.s.qcow2" $SIZE
check_offline b "$I/b.s.qcow2" $SIZE
check_offline c "$c" $SIZE
it_pass
