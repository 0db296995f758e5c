#!/usr/bin/env bash
# test-merge-snapshot: `livemerge snapshot` against a real -blockdev VM with 4 disks.
#
# 1. Snapshot of 1 disk, then of all 4 in one call: exit 0; the JSON result and `chain` (and
#    QEMU's own query-block) show the new overlay on top of the old chain; live writes made
#    after it land in the overlay: after QEMU stops, the old top is identical to a raw copy
#    taken (after a flush) just before the snapshot, and every active image reads back all
#    its patterns and equals a raw reference built independently.
# 2. An overlay path that exists (one of two disks) -> exit 2, a one-line error naming it, the
#    file untouched, no other overlay created, QEMU's block state unchanged. The same for a
#    dangling symlink (its target is not created), a directory, a layer of the chain, and one
#    new path given for two disks.
# 3. One of 4 overlays where QEMU cannot create it -> exit 1, block state unchanged, and no
#    overlay file of this run left: (a) in a missing directory (last of the 4); (b) in a
#    directory made immutable with `chattr +i` (root gets EPERM there; third of the 4, so
#    QEMU has created the first two before it fails); (c) under /sys (sysfs refuses root with
#    EACCES; second of the 4).
# Live data is read back through the devices after every step.
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
start_vm_blockdev vm "$a" "$b" "$c" "$d"
LM_SOCK=$T/vm.qmp
DISKS=(vda vdb vdc vdd)
KEYS=(a b c d)

# live_check_all: every disk's data reads back live.
live_check_all() {
	live_check vm vda:a vdb:b vdc:c vdd:d
}

# ov_write QDEV KEY OVKEY PATTERN OFF LEN: a live write, recorded for the disk and for the
# overlay it must land in.
ov_write() {
	live_write vm "$1" "$2" "$4" "$5" "$6"
	exp_add "$3" "$4" "$5" "$6"
}

# result_chain DISK: DISK's chain of files in the --json result of the last run.
result_chain() {
	lm_result_json | jq -c --arg d "$1" '.disks[] | select(.disk == $d) | [.chain[].filename]'
}

# ---- 1a. one disk
live_write vm vda a 0xa1 8M 1M
pre_copy vm vda a "$a"
lm_ok --json snapshot "vda=$I/a.s1.qcow2"
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, .verb]')" '[true,0,"snapshot"]' "snapshot vda: result"
it_assert_eq "$(result_chain vda)" "$(files_json "$I/a.s1.qcow2" "$a" "$I/a.0.qcow2")" "snapshot vda: chain in the result"
assert_chain vda "$I/a.s1.qcow2" "$a" "$I/a.0.qcow2"
assert_chain vdb "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
assert_chain vdc "$c" "$I/c.0.qcow2"
assert_chain vdd "$d" "$I/d.2.qcow2" "$I/d.1.qcow2" "$I/d.0.qcow2"
ov_write vda a s1 0xa2 9M 1M
live_check_all

# ---- 1b. four disks at once
ov_write vda a s1 0xa3 10M 1M
live_write vm vdb b 0xb1 8M 1M
live_write vm vdc c 0xc1 8M 1M
live_write vm vdd d 0xd1 8M 1M
pre_copy vm vda a "$I/a.s1.qcow2"
pre_copy vm vdb b "$b"
pre_copy vm vdc c "$c"
pre_copy vm vdd d "$d"
lm_ok --json snapshot "vda=$I/a.s2.qcow2" "vdb=$I/b.s1.qcow2" "vdc=$I/c.s1.qcow2" "vdd=$I/d.s1.qcow2"
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, (.disks | length)]')" '[true,0,4]' "snapshot of 4: result"
it_assert_eq "$(result_chain vdd)" "$(files_json "$I/d.s1.qcow2" "$d" "$I/d.2.qcow2" "$I/d.1.qcow2" "$I/d.0.qcow2")" \
	"snapshot of 4: vdd's chain in the result"
assert_chain vda "$I/a.s2.qcow2" "$I/a.s1.qcow2" "$a" "$I/a.0.qcow2"
assert_chain vdb "$I/b.s1.qcow2" "$b" "$I/b.1.qcow2" "$I/b.0.qcow2"
assert_chain vdc "$I/c.s1.qcow2" "$c" "$I/c.0.qcow2"
assert_chain vdd "$I/d.s1.qcow2" "$d" "$I/d.2.qcow2" "$I/d.1.qcow2" "$I/d.0.qcow2"
ov_write vda a s2a 0xa4 11M 1M
ov_write vdb b s2b 0xb2 9M 1M
ov_write vdc c s2c 0xc2 9M 1M
ov_write vdd d s2d 0xd2 9M 1M
live_check_all

# ---- 2. an overlay that exists already
printf 'precious, not an image\n' >"$I/exists.qcow2"
sum=$(file_sum "$I/exists.qcow2")
before=$(state_of "$LM_SOCK")
lm_expect 2 snapshot "vda=$I/a.new.qcow2" "vdb=$I/exists.qcow2"
lm_one_line_error "$I/exists.qcow2"
it_assert_eq "$(file_sum "$I/exists.qcow2")" "$sum" "existing overlay: file content"
assert_gone "$I/a.new.qcow2"
assert_state_unchanged "$LM_SOCK" "$before" "snapshot onto an existing file"
# other paths that exist, or would be overwritten: a dangling symlink (QEMU would create its
# target), a directory, a layer of the chain itself, one new path given for two disks
ln -s "$I/target.qcow2" "$I/link.qcow2"
mkdir "$I/adir"
for ov in "$I/link.qcow2" "$I/adir" "$a"; do
	lm_expect 2 snapshot "vda=$ov"
	lm_one_line_error "$ov"
	assert_state_unchanged "$LM_SOCK" "$before" "snapshot onto $ov"
done
assert_gone "$I/target.qcow2"
lm_expect 2 snapshot "vda=$I/twice.qcow2" "vdb=$I/twice.qcow2"
lm_one_line_error "$I/twice.qcow2"
assert_gone "$I/twice.qcow2"
assert_state_unchanged "$LM_SOCK" "$before" "one overlay path for two disks"
rm -rf "$I/link.qcow2" "$I/adir"

# ---- 3. QEMU cannot create one of 4 overlays: exit 1, nothing changes, nothing left
# bad_snapshot WHAT BADINDEX BADPATH: snapshot all 4 with the overlay of disk BADINDEX at
# BADPATH, the others in $I/new/.
bad_snapshot() {
	local what=$1 bad=$2 path=$3 i
	local -a args=() ours=()
	mkdir -p "$I/new"
	for i in 0 1 2 3; do
		if ((i == bad)); then
			args+=("${DISKS[i]}=$path")
		else
			args+=("${DISKS[i]}=$I/new/${KEYS[i]}.$what.qcow2")
			ours+=("$I/new/${KEYS[i]}.$what.qcow2")
		fi
	done
	before=$(state_of "$LM_SOCK")
	lm_expect 1 snapshot "${args[@]}"
	assert_state_unchanged "$LM_SOCK" "$before" "snapshot with an overlay $what"
	assert_gone "${ours[@]}" "$path"
	it_assert_eq "$(find "$I/new" -mindepth 1 | wc -l)" 0 "files left in $I/new after the snapshot with an overlay $what"
	grep -q '^livemerge: ' "$T/lm.err" || it_fail "no error message: $(lm_report)"
}

bad_snapshot in-a-missing-directory 3 "$T/no-such-dir/d.x.qcow2"
mkdir "$T/immutable"
command -v chattr >/dev/null || it_fail "chattr is missing: install e2fsprogs (scripts/deps.sh check installs it)"
if out=$(chattr +i "$T/immutable" 2>&1); then
	lm_on_exit "chattr -i '$T/immutable'"
	if touch "$T/immutable/probe" 2>/dev/null; then
		it_fail "root can still create files in a chattr +i directory: the test cannot work"
	fi
	bad_snapshot in-an-immutable-directory 2 "$T/immutable/c.x.qcow2"
	chattr -i "$T/immutable"
elif [[ $out == *"Operation not supported"* || $out == *"Inappropriate ioctl"* ]]; then
	# (ext4, xfs, btrfs and tmpfs since Linux 6.0 support it)
	it_skip_case in-an-immutable-directory "chattr +i is not supported on the filesystem of $T: $out"
else
	it_fail "chattr +i $T/immutable: $out"
fi
if touch "/sys/livemerge-probe.$$" 2>/dev/null; then
	rm -f "/sys/livemerge-probe.$$"
	it_fail "root can create files under /sys here: the test cannot work"
fi
bad_snapshot under-sys 1 "/sys/livemerge-test.$$.qcow2"
live_check_all

# The checkers themselves must reject wrong data (live now, offline below).
EXP[wrong]=${EXP[a]/0xa4/0xa5}
if (live_check vm vda:wrong) 2>/dev/null; then
	it_fail "live_check accepted pattern 0xa5 where 0xa4 was written"
fi
rm -f "$T/.fail-reason"
LM_PVF_EXPECTED=1
live_check_all

# ---- offline: old tops unchanged since their snapshot, active images hold everything
stop_vm vm
if (check_offline wrong "$I/a.s2.qcow2" $SIZE) 2>/dev/null; then
	it_fail "check_offline accepted pattern 0xa5 where 0xa4 was written"
fi
if (check_alone s2b "$I/a.s2.qcow2" $SIZE) 2>/dev/null; then
	it_fail "check_alone accepted vdb's overlay writes for vda's overlay"
fi
rm -f "$T/.fail-reason"
check_old_top "$a" $SIZE
check_old_top "$I/a.s1.qcow2" $SIZE
check_old_top "$b" $SIZE
check_old_top "$c" $SIZE
check_old_top "$d" $SIZE
check_offline a "$I/a.s2.qcow2" $SIZE
check_offline b "$I/b.s1.qcow2" $SIZE
check_offline c "$I/c.s1.qcow2" $SIZE
check_offline d "$I/d.s1.qcow2" $SIZE
# The overlays hold exactly what was written after their snapshot.
check_alone s1 "$I/a.s1.qcow2" $SIZE
check_alone s2a "$I/a.s2.qcow2" $SIZE
check_alone s2b "$I/b.s1.qcow2" $SIZE
check_alone s2c "$I/c.s1.qcow2" $SIZE
check_alone s2d "$I/d.s1.qcow2" $SIZE
it_pass
