#!/usr/bin/env bash
# test-merge-commit: `livemerge commit` against a real -blockdev VM with 4 disks (chains of
# depth 1, 2, 1, 3) and a second QMP monitor to watch jobs from outside.
#
# 1. Active commit of 1 disk with --delete: exit 0, the disk pivots (chain loses the top, in
#    the JSON result, `chain` and QEMU's query-block), the overlay file is removed and no
#    other; data intact including live writes made after the snapshot; new writes go on.
# 2. --dry-run of a 4-disk commit: the QMP commands in order (4 block-commit with our job
#    ids, then job-complete, job-finalize, job-dismiss per disk), nothing changes; --dry-run
#    snapshot creates no file.
# 3. Active commit of 4 disks with --delete: every disk pivots; exactly the 4 overlays are
#    removed.
# 4. Intermediate commit in the 4-deep chain (--top the middle layer by file name, --delete):
#    completes, the overlay above is re-pointed to the base (live and in its header), the
#    chain is one shorter, exactly that layer's file is removed.
# 5. Active commit with --base two layers down (by node name), no --delete: the chain loses
#    two layers, their files stay.
# 6. --speed: during a 16 MiB commit at 4 MiB/s, `livemerge qmp query-block-jobs` and
#    `livemerge jobs` (JSON and plain) on the second monitor show the speed; it takes >= 3 s.
# After QEMU stops every disk reads back all its patterns and equals a raw reference.
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
d=$(mk_chain "$I" d 3 $SIZE)
exp_chain a 1
exp_chain b 2
exp_chain c 1
exp_chain d 3
start_vm_2mon vm "$a" "$b" "$c" "$d"
LM_SOCK=$T/vm.qmp
MON2=$T/vm.qmp2

# files: the image files in $I, one per line, sorted.
files() {
	find "$I" -maxdepth 1 -type f | sort
}

# assert_removed BEFORE FILE...: the files in $I are BEFORE without exactly FILE...
assert_removed() {
	local before=$1 want
	shift
	want=$(grep -vxF -f <(printf '%s\n' "$@") <<<"$before" || true)
	it_assert_eq "$(files)" "$want" "image files after removing $*"
	assert_gone "$@"
}

result_chain() {
	lm_result_json | jq -c --arg d "$1" '.disks[] | select(.disk == $d) | [.chain[].filename]'
}

# ---- 1. active commit of one disk, --delete
lm_ok snapshot "vda=$I/a.s1.qcow2"
live_write vm vda a 0xa1 8M 1M
live_write vm vda a 0xa2 20M 3M
assert_chain vda "$I/a.s1.qcow2" "$a" "$I/a.0.qcow2"
before=$(files)
lm_ok --json commit vda --delete
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, .verb]')" '[true,0,"commit"]' "commit vda: result"
it_assert_eq "$(result_chain vda)" "$(files_json "$a" "$I/a.0.qcow2")" "commit vda: chain in the result"
assert_chain vda "$a" "$I/a.0.qcow2"
assert_chain vdb "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
assert_removed "$before" "$I/a.s1.qcow2"
assert_no_jobs "$LM_SOCK" "commit vda"
live_write vm vda a 0xa3 9M 1M
live_check vm vda:a

# ---- 2. --dry-run
lm_ok snapshot "vda=$I/a.s2.qcow2" "vdb=$I/b.s1.qcow2" "vdc=$I/c.s1.qcow2" "vdd=$I/d.s1.qcow2"
live_write vm vda a 0xa4 10M 1M
live_write vm vdb b 0xb1 8M 1M
live_write vm vdc c 0xc1 8M 1M
live_write vm vdd d 0xd1 8M 1M
before=$(state_of "$LM_SOCK")
lm_ok --json --dry-run commit vda vdb vdc vdd --delete
# (then a blockdev-del per released overlay node: checked below)
dry_cmds=$(jq -c 'select(.type == "command" and .execute != "blockdev-del") | [.execute, (.arguments["job-id"] // .arguments.id // .arguments["command-line"])]' "$T/lm.out" | jq -sc .)
flushes=''
for v in vda vdb vdc vdd; do flushes+=",[\"human-monitor-command\",\"qemu-io $(lm_node $v 1) flush\"]"; done
want='[["block-commit","livemerge-commit-vda"],["block-commit","livemerge-commit-vdb"],["block-commit","livemerge-commit-vdc"],["block-commit","livemerge-commit-vdd"]'
want+=',["job-complete","livemerge-commit-vda"],["job-complete","livemerge-commit-vdb"],["job-complete","livemerge-commit-vdc"],["job-complete","livemerge-commit-vdd"]'
# each base is flushed before any finalize, and again (the new active layer) before --delete
want+=$flushes
want+=',["job-finalize","livemerge-commit-vda"],["job-finalize","livemerge-commit-vdb"],["job-finalize","livemerge-commit-vdc"],["job-finalize","livemerge-commit-vdd"]'
want+=',["job-dismiss","livemerge-commit-vda"],["job-dismiss","livemerge-commit-vdb"],["job-dismiss","livemerge-commit-vdc"],["job-dismiss","livemerge-commit-vdd"]'
want+="$flushes]"
it_assert_eq "$dry_cmds" "$want" "--dry-run commit: commands in order"
it_assert_eq "$(jq -c 'select(.type == "command" and .execute == "block-commit") | .arguments | [."auto-finalize", ."auto-dismiss"]' "$T/lm.out" | sort -u)" \
	'[false,false]' "--dry-run commit: block-commit holds the jobs (auto-finalize/auto-dismiss false)"
it_assert_eq "$(jq -c 'select(.type == "command" and .execute != "human-monitor-command") | .execute' "$T/lm.out" | tail -n 4 | sort -u)" '"blockdev-del"' \
	"--dry-run commit: the last 4 commands release the overlays' nodes"
overlay_nodes=$(for v in vda vdb vdc vdd; do lm_node $v 0; done | sort | jq -R . | jq -sc .)
it_assert_eq "$(jq -c 'select(.type == "command" and .execute == "blockdev-del") | .arguments."node-name"' "$T/lm.out" | jq -sc 'sort')" \
	"$overlay_nodes" "--dry-run commit: blockdev-del of the overlays' nodes"
it_assert_eq "$(jq -c 'select(.type == "job")' "$T/lm.out" | wc -l)" 0 "--dry-run commit: job lines (no job may start)"
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "--dry-run commit: result"
assert_state_unchanged "$LM_SOCK" "$before" "--dry-run commit"
lm_ok --json --dry-run snapshot "vda=$I/a.dry.qcow2"
it_assert_eq "$(jq -c 'select(.type == "command") | .execute' "$T/lm.out" | jq -sc .)" '["transaction"]' "--dry-run snapshot: commands"
assert_gone "$I/a.dry.qcow2"
assert_state_unchanged "$LM_SOCK" "$before" "--dry-run snapshot"

# ---- 3. active commit of 4 disks, --delete
before=$(files)
lm_ok --json commit vda vdb vdc vdd --delete
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, (.disks | length)]')" '[true,0,4]' "commit of 4: result"
assert_chain vda "$a" "$I/a.0.qcow2"
assert_chain vdb "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
assert_chain vdc "$c" "$I/c.0.qcow2"
assert_chain vdd "$d" "$I/d.2.qcow2" "$I/d.1.qcow2" "$I/d.0.qcow2"
assert_removed "$before" "$I/a.s2.qcow2" "$I/b.s1.qcow2" "$I/c.s1.qcow2" "$I/d.s1.qcow2"
assert_no_jobs "$LM_SOCK" "commit of 4"
live_write vm vda a 0xa5 11M 1M
live_write vm vdb b 0xb2 9M 1M
live_write vm vdc c 0xc2 9M 1M
live_write vm vdd d 0xd2 9M 1M
live_check vm vda:a vdb:b vdc:c vdd:d

# ---- 4. intermediate commit: --top the middle of d.3 -> d.2 -> d.1 -> d.0
before=$(files)
lm_ok --json commit vdd --top "$I/d.2.qcow2" --delete
assert_chain vdd "$d" "$I/d.1.qcow2" "$I/d.0.qcow2"
it_assert_eq "$(qmpq "$LM_SOCK" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' |
	jq -r --arg f "$d" '.return[] | select(.drv == "qcow2" and .file == $f) | .backing_file')" "$I/d.1.qcow2" \
	"intermediate commit: live backing file of the overlay above"
assert_removed "$before" "$I/d.2.qcow2"
assert_no_jobs "$LM_SOCK" "intermediate commit"
live_write vm vdd d 0xd3 10M 1M
live_check vm vdd:d

# ---- 5. active commit with --base two layers down (node name), no --delete
lm_ok snapshot "vdb=$I/b.s2.qcow2"
live_write vm vdb b 0xb3 10M 2M
base=$(lm_node vdb 2)
[[ $(lm_chain vdb) == "$(files_json "$I/b.s2.qcow2" "$b" "$I/b.1.qcow2" "$I/b.0.qcow2")" ]] ||
	it_fail "vdb chain before --base commit: $(lm_chain vdb)"
before=$(files)
lm_ok --json commit vdb --base "$base"
assert_chain vdb "$I/b.1.qcow2" "$I/b.0.qcow2"
it_assert_eq "$(files)" "$before" "commit without --delete: image files"
assert_no_jobs "$LM_SOCK" "commit --base"
live_write vm vdb b 0xb4 12M 1M
live_check vm vdb:b

# ---- 6. --speed, watched from the second monitor
lm_ok snapshot "vdc=$I/c.s2.qcow2"
live_write vm vdc c 0xc3 16M 16M
start=$SECONDS
"$LM" -c "$LM_SOCK" --json commit vdc --speed 4M >"$T/slow.out" 2>"$T/slow.err" </dev/null &
slow=$!
it_track slow "$slow"
wait_job_status "$MON2" livemerge-commit-vdc running 10
q=$("$LM" -c "$MON2" --json qmp query-block-jobs) || it_fail "livemerge qmp query-block-jobs: $q"
it_assert_eq "$(jq -c '[.[] | select(.device == "livemerge-commit-vdc") | .speed]' <<<"$q")" '[4194304]' \
	"query-block-jobs speed of the --speed 4M commit"
j=$("$LM" -c "$MON2" --json jobs) || it_fail "livemerge jobs: $j"
it_assert_eq "$(jq -c 'select(.job == "livemerge-commit-vdc") | [.disk, ."job-type", .speed]' <<<"$j")" \
	'["vdc","commit",4194304]' "livemerge jobs: the commit's disk, type and speed"
"$LM" -c "$MON2" jobs >"$T/jobs.txt" || it_fail "livemerge jobs (plain) failed"
grep -E '^livemerge-commit-vdc +commit +vdc .* 4194304' "$T/jobs.txt" >/dev/null ||
	it_fail "plain 'livemerge jobs' does not show the job with speed 4194304: $(cat "$T/jobs.txt")"
rc=0
wait "$slow" || rc=$?
elapsed=$((SECONDS - start))
((rc == 0)) || it_fail "livemerge --json commit vdc --speed 4M: exit $rc: $(head -n 3 "$T/slow.err")"
((elapsed >= 3)) || it_fail "commit of 16 MiB at 4 MiB/s took $elapsed s (< 3 s): --speed not honoured"
assert_chain vdc "$c" "$I/c.0.qcow2"
live_check vm vda:a vdb:b vdc:c vdd:d

# ---- offline
stop_vm vm
check_offline a "$a" $SIZE
check_offline b "$I/b.1.qcow2" $SIZE
check_offline c "$c" $SIZE
check_offline d "$d" $SIZE
it_assert_eq "$(qemu-img info --output=json "$d" | jq -r '."backing-filename"')" "$I/d.1.qcow2" \
	"intermediate commit: backing file in the header of $d"
it_pass
