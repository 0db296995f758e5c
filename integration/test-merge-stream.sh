#!/usr/bin/env bash
# test-merge-stream: `livemerge stream` against a real -blockdev VM with 3 disks (chains of
# depth 3, 3, 1) and a second QMP monitor to watch jobs from outside.
#
# 1. --dry-run stream: block-stream (our job id, auto-finalize/-dismiss off, no base), then
#    job-finalize and job-dismiss; nothing changes.
# 2. Full stream (flatten) with --delete: the active layer holds everything and has no
#    backing file (live and in its header); exactly the 3 layers below are removed.
# 3. stream --base (file name of the layer two down): the chain keeps base and what is below
#    it, the layer in between leaves the chain (its file stays: no --delete), the active
#    layer's backing file is base (live and in its header).
# 4. Two disks at once with --speed 4M, one of them pulling 16 MiB: `livemerge qmp
#    query-block-jobs` and `livemerge jobs` on the second monitor show the speed; the group
#    takes >= 3 s; both disks end flattened.
# Live writes before and after each step are read back live, and offline after QEMU stops
# (read -P and qemu-img compare against a raw reference).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
lm_setup

SIZE=64M
I=$T/img
a=$(mk_chain "$I" a 3 $SIZE)
b=$(mk_chain "$I" b 3 $SIZE)
c=$(mk_chain "$I" c 1 $SIZE)
exp_chain a 3
exp_chain b 3
exp_chain c 1
# 16 MiB in c's base for the slow stream
qemu_io_check "$I/c.0.qcow2" "write -P 0x3c 16M 16M"
exp_add c 0x3c 16M 16M
start_vm_2mon vm "$a" "$b" "$c"
LM_SOCK=$T/vm.qmp
MON2=$T/vm.qmp2

files() {
	find "$I" -maxdepth 1 -type f | sort
}

# live_backing FILE: the backing file QEMU's (one) qcow2 node of FILE has now, or "none".
live_backing() {
	local nodes n
	nodes=$(qmpq "$LM_SOCK" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}')
	n=$(jq -r --arg f "$1" '[.return[] | select(.drv == "qcow2" and .file == $f)] | length' <<<"$nodes") ||
		it_fail "live_backing $1: query-named-block-nodes reply not understood: ${nodes:0:300}"
	((n == 1)) || it_fail "live_backing $1: $n qcow2 nodes of it in QEMU, not 1"
	jq -r --arg f "$1" '.return[] | select(.drv == "qcow2" and .file == $f) | .backing_file // "none"' <<<"$nodes"
}

live_write vm vda a 0xa1 8M 1M
live_write vm vdb b 0xb1 8M 1M
live_write vm vdc c 0xc1 8M 1M

# ---- 1. --dry-run
before=$(state_of "$LM_SOCK")
lm_ok --json --dry-run stream vda
top_node=$(lm_node vda 0)
# the top, which receives the data, is flushed before the finalize and again
# (its rewritten header) after it
it_assert_eq "$(jq -c 'select(.type == "command" and .execute != "blockdev-del") | [.execute, (.arguments["job-id"] // .arguments.id // .arguments["command-line"])]' "$T/lm.out" | jq -sc .)" \
	'[["block-stream","livemerge-stream-vda"],["human-monitor-command","qemu-io '"$top_node"' flush"],["job-finalize","livemerge-stream-vda"],["job-dismiss","livemerge-stream-vda"],["human-monitor-command","qemu-io '"$top_node"' flush"]]' \
	"--dry-run stream: commands in order"
it_assert_eq "$(jq -c 'select(.type == "command" and .execute == "block-stream") | .arguments | [."auto-finalize", ."auto-dismiss", has("base"), has("base-node")]' "$T/lm.out")" \
	'[false,false,false,false]' "--dry-run stream: block-stream arguments (held jobs, no base)"
it_assert_eq "$(jq -c 'select(.type == "job")' "$T/lm.out" | wc -l)" 0 "--dry-run stream: job lines"
assert_state_unchanged "$LM_SOCK" "$before" "--dry-run stream"

# ---- 2. flatten vda, --delete
before=$(files)
lm_ok --json stream vda --delete
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, .verb]')" '[true,0,"stream"]' "stream vda: result"
assert_chain vda "$a"
got=$(live_backing "$a")
it_assert_eq "$got" none "flattened vda: live backing file"
want=$(grep -vxF -e "$I/a.0.qcow2" -e "$I/a.1.qcow2" -e "$I/a.2.qcow2" <<<"$before")
it_assert_eq "$(files)" "$want" "stream --delete: image files left"
assert_no_jobs "$LM_SOCK" "stream vda"
live_write vm vda a 0xa2 9M 1M
live_check vm vda:a vdb:b vdc:c

# ---- 3. stream vdb --base b.1 (two layers below the active b.3)
before=$(files)
lm_ok --json stream vdb --base "$I/b.1.qcow2"
assert_chain vdb "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
it_assert_eq "$(live_backing "$b")" "$I/b.1.qcow2" "stream --base: live backing file of vdb's active layer"
it_assert_eq "$(files)" "$before" "stream without --delete: image files"
assert_no_jobs "$LM_SOCK" "stream --base"
live_write vm vdb b 0xb2 9M 1M
live_check vm vdb:b

# ---- 4. two disks, --speed, watched from the second monitor
start=$SECONDS
"$LM" -c "$LM_SOCK" --json stream vdb vdc --speed 4M >"$T/slow.out" 2>"$T/slow.err" </dev/null &
slow=$!
it_track slow "$slow"
wait_job_status "$MON2" livemerge-stream-vdc running 10
q=$("$LM" -c "$MON2" --json qmp query-block-jobs) || it_fail "livemerge qmp query-block-jobs: $q"
it_assert_eq "$(jq -c '[.[] | select(.device == "livemerge-stream-vdc") | [.type, .speed]]' <<<"$q")" '[["stream",4194304]]' \
	"query-block-jobs: type and speed of the --speed 4M stream"
j=$("$LM" -c "$MON2" --json jobs) || it_fail "livemerge jobs: $j"
it_assert_eq "$(jq -c 'select(.job == "livemerge-stream-vdc") | [.disk, ."job-type", .speed]' <<<"$j")" \
	'["vdc","stream",4194304]' "livemerge jobs: the stream's disk, type and speed"
rc=0
wait "$slow" || rc=$?
elapsed=$((SECONDS - start))
((rc == 0)) || it_fail "livemerge --json stream vdb vdc --speed 4M: exit $rc: $(head -n 3 "$T/slow.err")"
((elapsed >= 3)) || it_fail "stream of 16 MiB at 4 MiB/s took $elapsed s (< 3 s): --speed not honoured"
assert_chain vdb "$b"
assert_chain vdc "$c"
assert_no_jobs "$LM_SOCK" "stream of 2"
live_write vm vdb b 0xb3 10M 1M
live_write vm vdc c 0xc2 9M 1M
live_check vm vda:a vdb:b vdc:c

# ---- offline
stop_vm vm
for f in "$a" "$b" "$c"; do
	got=$(image_backing "$f")
	it_assert_eq "$got" none "flattened $f: backing file in the header"
done
check_offline a "$a" $SIZE
check_offline b "$b" $SIZE
check_offline c "$c" $SIZE
# b.1 and b.0 were only read from
verify_chain_data "$I/b.1.qcow2" b 1
it_pass
