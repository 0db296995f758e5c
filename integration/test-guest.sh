#!/usr/bin/env bash
# test-guest: the real test guest (integration/guest/) and its checker, without livemerge.
#
# 1. The checker on data made by the writer on the host: a sound log passes, read as raw and
#    through qcow2; a flipped byte (torn), an older block (stale), a zeroed block (missing), a
#    block copied elsewhere (misplaced), another disk's name, and an unfinished ACK line are
#    each caught or handled.
# 2. The guest boots with two log disks and an ext4 disk, writes for ~3 s; qemu-ga freezes the
#    filesystem (guest-fsfreeze-status says "frozen", the appender stops while the raw disks go
#    on) and thaws it (the appender resumes).
# 3. After quit, the checker passes on both disks offline (through qcow2), the filesystem is
#    clean and holds every acknowledged record; a copy of a disk with one byte flipped fails.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
it_setup

CHECK=$IT_DIR/guest/check-disk.sh
guest_build
WRITER=$GUEST_DIR/lmwriter

# expect_check WANT SUMMARY_REGEX IMAGE DISK ACK: run check-disk.sh, want exit WANT (0 or 1)
# and a summary line matching SUMMARY_REGEX.
expect_check() {
	local want=$1 re=$2 out rc=0
	shift 2
	out=$("$CHECK" "$@" 2>&1) || rc=$?
	[[ $rc == "$want" ]] || it_fail "check-disk.sh $*: exit $rc, expected $want: $out"
	[[ $out =~ $re ]] || it_fail "check-disk.sh $*: '$out' does not match '$re'"
	it_log "check-disk.sh ${*##*/}: $out"
}

# block_of FILE INDEX OUT: copy block INDEX (4 KiB) of FILE to OUT.
block_of() {
	dd if="$1" of="$3" bs=4096 skip="$2" count=1 status=none
}
# put_block FILE INDEX IN: write the 4 KiB in IN over block INDEX of FILE.
put_block() {
	dd if="$3" of="$1" bs=4096 seek="$2" count=1 conv=notrunc status=none
}
# flip_byte FILE OFFSET: invert one byte of FILE.
flip_byte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059 # the format is the byte's octal escape
	printf "$(printf '\\%03o' $((b ^ 0xff)))" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none
}

# ---------------------------------------------------------------- 1. the checker, on host data
RING=256
"$WRITER" --file "$T/u.raw" --disk vda --ring $RING --seqs 1-1000
truncate -s 2M "$T/u.raw"
printf 'ACK vda 990\nACK vdb 5\nACK vda 1000\n' >"$T/u.ack"
expect_check 0 '^disk vda: acked 1000, checked 256 blocks, 0 torn, 0 stale, 0 missing, 0 misplaced, seqs 745\.\.1000 checked$' \
	"$T/u.raw" vda "$T/u.ack"
qemu-img convert -q -f raw -O qcow2 "$T/u.raw" "$T/u.qcow2"
expect_check 0 ', 0 torn, 0 stale, 0 missing, 0 misplaced, seqs 745\.\.1000 checked$' "$T/u.qcow2" vda "$T/u.ack"
# An ack file without an ACK of the disk checks nothing: that fails (the writer should have
# written); a plain 0 says so on purpose.
printf 'ACK vdb 5\n' >"$T/novda.ack"
expect_check 1 'holds no acknowledged write of vda' "$T/u.raw" vda "$T/novda.ack"
expect_check 0 ', 0 misplaced, seqs none checked$' "$T/u.raw" vda 0
# An unfinished last line is not an acknowledgement yet.
printf 'ACK vda 1000\nACK vda 2000' >"$T/partial.ack"
expect_check 0 '^disk vda: acked 1000,' "$T/u.raw" vda "$T/partial.ack"
# Acknowledged beyond what is there: the newest seqs' blocks hold older ones.
expect_check 1 ', 5 stale, 0 missing' "$T/u.raw" vda 1005
expect_check 1 ', 256 misplaced, seqs 1\.\.5 checked$' "$T/u.raw" vdb 5

cp "$T/u.raw" "$T/torn.raw"
flip_byte "$T/torn.raw" $(((1000 % RING) * 4096 + 2000))
expect_check 1 ', 1 torn, 0 stale, 0 missing, 0 misplaced, seqs 745\.\.1000 checked$' "$T/torn.raw" vda 1000
cp "$T/u.raw" "$T/torn2.raw"
flip_byte "$T/torn2.raw" $(((777 % RING) * 4096 + 40)) # in the header: its seq
expect_check 1 ', 1 torn,' "$T/torn2.raw" vda 1000

"$WRITER" --file "$T/old.raw" --disk vda --ring $RING --seqs 1-900
block_of "$T/old.raw" $((950 % RING)) "$T/old.blk"
cp "$T/u.raw" "$T/stale.raw"
put_block "$T/stale.raw" $((950 % RING)) "$T/old.blk"
expect_check 1 ', 0 torn, 1 stale, 0 missing, 0 misplaced, seqs 745\.\.1000 checked$' "$T/stale.raw" vda 1000
# ... which is fine if that seq was never acknowledged.
expect_check 0 ', 0 stale,' "$T/stale.raw" vda 900

cp "$T/u.raw" "$T/missing.raw"
dd if=/dev/zero of="$T/missing.raw" bs=4096 seek=$((999 % RING)) count=1 conv=notrunc status=none
expect_check 1 ', 0 torn, 0 stale, 1 missing, 0 misplaced, seqs 745\.\.1000 checked$' "$T/missing.raw" vda 1000

cp "$T/u.raw" "$T/misplaced.raw"
block_of "$T/u.raw" 10 "$T/b10.blk"
put_block "$T/misplaced.raw" 11 "$T/b10.blk"
expect_check 1 ', 0 torn, 0 stale, 0 missing, 1 misplaced, seqs 745\.\.1000 checked$' "$T/misplaced.raw" vda 1000
it_log "checker: sound, torn, stale, missing, misplaced and partial-ACK cases behave"

# ---------------------------------------------------------------- 2. the guest
for d in vda vdb; do
	qemu-img create -q -f qcow2 "$T/$d.qcow2" 32M
done
guest_mkfs "$T/vdc.qcow2" 32M
start_guest g -r 100 -f "$T/vdc.qcow2" "$T/vda.qcow2" "$T/vdb.qcow2"
a0=$(guest_last_ack g vda)
b0=$(guest_last_ack g vdb)
t0=$(date +%s%N)
sleep 3

reply=$(guest_qga g '{"execute":"guest-fsfreeze-freeze"}') || it_fail "guest-fsfreeze-freeze: $reply"
it_assert_eq "$(jq -c .return <<<"$reply")" 1 "filesystems frozen by guest-fsfreeze-freeze"
reply=$(guest_qga g '{"execute":"guest-fsfreeze-status"}') || it_fail "guest-fsfreeze-status: $reply"
it_assert_eq "$(jq -r .return <<<"$reply")" frozen "guest-fsfreeze-status while frozen"
f1=$(guest_last_fsack g)
a1=$(guest_last_ack g vda)
sleep 1
f2=$(guest_last_fsack g)
a2=$(guest_last_ack g vda)
# One record may have been past its write and in fsync when the freeze came.
((f2 <= f1 + 1)) || it_fail "the /mnt appender went on while frozen: FSACK $f1 -> $f2"
((a2 > a1)) || it_fail "raw writes to vda stopped during the freeze: ACK $a1 -> $a2"
reply=$(guest_qga g '{"execute":"guest-fsfreeze-thaw"}') || it_fail "guest-fsfreeze-thaw: $reply"
it_assert_eq "$(jq -c .return <<<"$reply")" 1 "filesystems thawed by guest-fsfreeze-thaw"
reply=$(guest_qga g '{"execute":"guest-fsfreeze-status"}') || it_fail "guest-fsfreeze-status: $reply"
it_assert_eq "$(jq -r .return <<<"$reply")" thawed "guest-fsfreeze-status after thaw"
n=100
while (($(guest_last_fsack g) <= f2)); do
	((n-- > 0)) || it_fail "the /mnt appender did not resume within 5 s of the thaw (FSACK $f2)"
	sleep 0.05
done
it_log "freeze: FSACK $f1 -> $f2 in 1 s frozen, vda ACK $a1 -> $a2; resumed after thaw"

a3=$(guest_last_ack g vda)
b3=$(guest_last_ack g vdb)
secs=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.2f", ns / 1e9 }')
it_log "write rate: vda $(awk -v n=$((a3 - a0)) -v s="$secs" 'BEGIN { printf "%.0f", n / s }') blocks/s," \
	"vdb $(awk -v n=$((b3 - b0)) -v s="$secs" 'BEGIN { printf "%.0f", n / s }') blocks/s over $secs s (asked 100)"
((a3 - a0 >= 100 && b3 - b0 >= 100)) || it_fail "too few writes: vda $a0 -> $a3, vdb $b0 -> $b3 in $secs s"

# A client that leaves without reading its reply: the next one still gets its own.
printf '{"execute":"guest-info"}\n{"execute":"guest-get-osinfo"}\n' | socat -u - "UNIX-CONNECT:$T/g.qga" >/dev/null 2>&1 || true
reply=$(guest_qga g '{"execute":"guest-fsfreeze-status"}') || it_fail "guest-fsfreeze-status after an unread reply: $reply"
it_assert_eq "$(jq -r .return <<<"$reply")" thawed "guest-fsfreeze-status after an unread reply"

# Live, through QEMU's NBD export of each disk with the VM paused for the read.
for d in vda vdb; do
	out=$(guest_check_live g "$d") || it_fail "live check of $d: $out"
	[[ $out =~ ^disk\ $d:\ acked\ ([1-9][0-9]*),.*\ 0\ torn,\ 0\ stale,\ 0\ missing,\ 0\ misplaced,\ seqs\ [1-9][0-9]*\.\.([0-9]+)\ checked$ &&
		${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]] ||
		it_fail "live check of $d: $out"
	it_log "live: $out"
done
a=$(guest_last_ack g vda)
guest_wait_ack g vda $((a + 10)) 10 # resumed after the live check

fsack=$(guest_last_fsack g)
stop_guest g

# ---------------------------------------------------------------- 3. offline checks
grep -q '^ERR' "$T/g.ack" && it_fail "the writer reported errors: $(grep -m1 '^ERR' "$T/g.ack")"
for d in vda vdb; do
	expect_check 0 "^disk $d: acked [1-9][0-9]*, checked 4096 blocks, 0 torn, 0 stale, 0 missing, 0 misplaced, seqs [0-9]+\\.\\.[0-9]+ checked\$" \
		"$T/$d.qcow2" "$d" "$T/g.ack"
done
qemu-img convert -q -O raw "$T/vdc.qcow2" "$T/vdc.raw"
# The guest never unmounted it: replay the journal (exit 1: "fixed"), then it must be clean.
guest_fs_require
rc=0
out=$(e2fsck -fy "$T/vdc.raw" 2>&1) || rc=$?
((rc <= 1)) || it_fail "e2fsck -fy on the fs disk: exit $rc: $out"
out=$(e2fsck -fn "$T/vdc.raw" 2>&1) || it_fail "e2fsck -fn on the fs disk after the replay: $out"
((fsack > 0)) || it_fail "the fs appender acknowledged no record"
records=$(guest_fs_records "$T/vdc.raw")
((records >= fsack)) || it_fail "/lm.log holds $records good records, $fsack were acknowledged"
it_log "fs disk clean, /lm.log holds $records records in order ($fsack acknowledged)"
# One flipped byte in an acknowledged block must be caught.
qemu-img convert -q -O raw "$T/vda.qcow2" "$T/vda-bad.raw"
last=$(guest_last_ack g vda)
flip_byte "$T/vda-bad.raw" $(((last % 4096) * 4096 + 100))
expect_check 1 ', 1 torn, 0 stale, 0 missing, 0 misplaced, seqs [0-9]+\.\.'"$last"' checked$' "$T/vda-bad.raw" vda "$T/g.ack"

it_pass
