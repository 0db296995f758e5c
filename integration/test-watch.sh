#!/usr/bin/env bash
# test-watch: `livemerge watch` keeps a thin block volume ahead of a real guest.
# it-timeout: 600
#
# The booted test guest's writer writes a 256 MiB ring (4x the volume's first size) into vda, a
# qcow2 overlay on a 64 MiB loop-device volume (examples/volume-loop) over a qcow2 base file;
# vda is a -blockdev host_device + qcow2 under virtio-blk with the default werror (enospc: the
# VM stops on ENOSPC, other errors reach the guest).
# 1. Bad input: no --volume-cmd, a bad --chunk, a disk the VM lacks, a disk whose active layer
#    is a file: each exit 2 with one line, nothing extended.
# 2. With watch (--chunk 32M --headroom 24M): the guest writes the whole ring; QEMU's second
#    monitor sees no STOP and no BLOCK_IO_ERROR, the console no I/O error; the volume grew in
#    32 MiB steps (one JSON line per step, from QEMU's threshold event); SIGTERM: exit 0.
#    After quit, every acknowledged block reads back (check-disk.sh through the chain).
# 3. Without watch: the VM stops on ENOSPC (BLOCK_IO_ERROR nospace, status io-error) with the
#    volume full; a watch started then extends the volume (why "nospace") and only then
#    resumes the VM; the writer goes on past the ring; every acknowledged block reads back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-block.sh
. "$IT_DIR/lib-block.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
it_setup
it_require_lm
blk_setup || it_fail "this test needs loop devices"
guest_build

MIB=1048576
VOLCMD=$IT_ROOT/examples/volume-loop
export LM_LOOP_DIR=$T/vols
mkdir -p "$LM_LOOP_DIR"
RING_MIB=256
RATE=${WATCH_RATE:-2500} # blocks of 4 KiB per second
RING_BLOCKS=$((RING_MIB * MIB / 4096))

# the loop devices volume-loop attached, detached at the end (after QEMU is gone)
vols_detach() {
	local dev
	for dev in $(losetup -n -O NAME,BACK-FILE | awk -v d="$LM_LOOP_DIR/" 'index($2, d) == 1 { print $1 }'); do
		losetup -d "$dev"
	done
}
it_on_exit vols_detach

qemu-img create -q -f qcow2 "$T/base.qcow2" 512M

# mkvol NAME: a 64 MiB volume $T/NAME holding an empty qcow2 overlay of base.qcow2
mkvol() {
	"$VOLCMD" create "$T/$1" $((64 * MIB)) || it_fail "volume-loop create $1 failed"
	qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/$1" 512M ||
		it_fail "qemu-img create on $T/$1 failed"
}

# check_data NAME VOL: every block guest NAME acknowledged on vda is in volume VOL, read
# through its qcow2 chain (check-disk.sh reads a block device as raw: convert it first)
check_data() {
	local out
	qemu-img convert -f qcow2 -O raw "$T/$2" "$T/$2.raw" || it_fail "qemu-img convert $2 failed"
	out=$(guest_check "$1" vda "$T/$2.raw") || it_fail "data of $1 in $2: $out"
	rm -f "$T/$2.raw"
	it_log "check $2: $out"
}

volsize() {
	blockdev --getsize64 "$(readlink -f "$T/$1")"
}

# events NAME: record every QMP event of guest NAME (its second monitor) in $T/NAME.events
events() {
	printf '#!/bin/sh\necho %s\nexec cat >"%s"\n' "'{\"execute\":\"qmp_capabilities\"}'" \
		"$T/$1.events" >"$T/$1.recorder"
	chmod +x "$T/$1.recorder"
	socat "UNIX-CONNECT:$T/$1.mon2" "EXEC:$T/$1.recorder" </dev/null >/dev/null 2>&1 &
	it_track "$1-events" $!
}

vm_status() {
	qmp_raw "$T/$1.qmp" '{"execute":"query-status"}' | jq -r .return.status
}

# start_watch NAME OUT [ARGS]: watch guest NAME's main monitor in the background, JSON lines
# to $T/OUT.out, messages to $T/OUT.err
start_watch() {
	local name=$1 out=$2
	shift 2
	"$LM" -c "$T/$name.qmp" --journal "$T/journal" --json watch --volume-cmd "$VOLCMD" \
		--chunk 32M --headroom 24M "$@" >"$T/$out.out" 2>"$T/$out.err" </dev/null &
	WATCH_PID=$!
	it_track "$out" "$WATCH_PID"
	local n=200
	while ((n-- > 0)) && ! grep -q "watching 1 layer" "$T/$out.err"; do
		kill -0 "$WATCH_PID" 2>/dev/null || it_fail "watch exited early: $(cat "$T/$out.err")"
		sleep 0.05
	done
	((n >= 0)) || it_fail "watch not ready in 10 s: $(cat "$T/$out.err")"
}

# stop_watch OUT: SIGTERM; it must exit 0
stop_watch() {
	local rc=0
	kill -TERM "$WATCH_PID"
	wait "$WATCH_PID" || rc=$?
	rm -f "$T/$1.pid"
	it_assert_eq "$rc" 0 "watch's exit status on SIGTERM"
	grep -q "watch: stopped" "$T/$1.err" || it_fail "watch did not say it stopped: $(cat "$T/$1.err")"
}

# check_steps OUT WHY: every line of $T/OUT.out is one 32 MiB step for vda, each from where
# the last ended, the first from 64 MiB; WHY: the reason of the first line. Prints the count.
check_steps() {
	local out=$T/$1.out bad
	[[ -s $out ]] || it_fail "$1: no extension was reported"
	bad=$(jq -rs --arg why "$2" --argjson m $MIB '
		. as $l | [range(0; length) | . as $i | $l[$i] |
		 select(.disk != "vda" or .to - .from != 32 * $m or
			.from != (if $i == 0 then 64 * $m else $l[$i - 1].to end) or
			($i == 0 and .why != $why))] | length' "$out")
	[[ $bad == 0 ]] || it_fail "$1: extensions not in 32 MiB steps from 64 MiB: $(cat "$out")"
	wc -l <"$out"
}

# ---------------------------------------------------------------- 1. bad input
mkvol vol0
qemu-img create -q -f qcow2 "$T/plain.qcow2" 64M
start_guest g0 -r 10 "$T/vol0" "$T/plain.qcow2"
expect_usage() {
	local what=$1 rc=0 err
	shift
	err=$("$LM" -c "$T/g0.qmp" --journal "$T/journal" watch "$@" 2>&1 >/dev/null) || rc=$?
	it_assert_eq "$rc" 2 "$what: exit status"
	[[ $(grep -c . <<<"$err") == 1 ]] || it_fail "$what: not one line: $err"
	it_log "$what: $err"
}
expect_usage "no --volume-cmd" vda
expect_usage "bad --chunk" --volume-cmd "$VOLCMD" --chunk 12Q vda
expect_usage "unknown disk" --volume-cmd "$VOLCMD" vdx
expect_usage "file layer" --volume-cmd "$VOLCMD" vdb
it_assert_eq "$(volsize vol0)" $((64 * MIB)) "vol0 after the refused watches"
stop_guest g0

# ---------------------------------------------------------------- 2. with watch
mkvol vol1
GUEST_APPEND="lm.region=$RING_MIB" start_guest g1 -r "$RATE" "$T/vol1"
events g1
start_watch g1 w1
t0=$SECONDS
guest_wait_ack g1 vda $((RING_BLOCKS + RATE)) 300
it_log "ring of $RING_MIB MiB written in $((SECONDS - t0)) s"
stop_watch w1
it_assert_eq "$(vm_status g1)" running "g1 after the ring"
if grep -E '"event": *"(STOP|BLOCK_IO_ERROR)"' "$T/g1.events"; then
	it_fail "g1 stopped or saw an I/O error with watch running"
fi
grep -q '"return"' "$T/g1.events" || it_fail "the event recorder never negotiated"
if grep -iE 'I/O error|^ERR|LOG .*error' "$T/g1.console"; then
	it_fail "an I/O error reached the guest"
fi
steps=$(check_steps w1 threshold)
size=$(volsize vol1)
it_assert_eq "$size" $(((64 + 32 * steps) * MIB)) "vol1's size after $steps steps"
((size >= (RING_MIB + 0) * MIB)) || it_fail "vol1 is $size bytes: less than the ring it holds"
jq -e 'select(.why == "threshold") | .ms >= 0 and .ms < 1000' "$T/w1.out" >/dev/null ||
	it_fail "an extension without a sane event delay: $(cat "$T/w1.out")"
it_log "with watch: $steps extensions to $((size / MIB)) MiB; ms: $(jq -r .ms "$T/w1.out" | sort -n | tr '\n' ' ')"
stop_guest g1
check_data g1 vol1

# ---------------------------------------------------------------- 3. without, then watch
mkvol vol2
GUEST_APPEND="lm.region=$RING_MIB" start_guest g2 -r "$RATE" "$T/vol2"
events g2
n=1200
while ((n-- > 0)) && [[ $(vm_status g2) != io-error ]]; do
	sleep 0.1
done
it_assert_eq "$(vm_status g2)" io-error "g2's status without watch"
grep -qE '"event": *"BLOCK_IO_ERROR".*"nospace": *true' "$T/g2.events" ||
	it_fail "no BLOCK_IO_ERROR with nospace: $(grep -c . "$T/g2.events") events"
it_assert_eq "$(volsize vol2)" $((64 * MIB)) "vol2 when g2 stopped"
stopped_at=$(guest_last_ack g2 vda)
it_log "g2 stopped on ENOSPC at seq $stopped_at"
sleep 1
it_assert_eq "$(guest_last_ack g2 vda)" "$stopped_at" "acks while g2 is stopped"
start_watch g2 w2
guest_wait_ack g2 vda $((RING_BLOCKS + RATE)) 300
first=$(head -n 1 "$T/w2.out")
it_assert_eq "$(jq -r .why <<<"$first")" nospace "the first extension's reason"
# resumed after the extension ended (its journal end), never before
resumed=$(jq -r 'select(.event == "RESUME") | .timestamp.seconds + .timestamp.microseconds / 1e6' \
	"$T/g2.events" | head -n 1)
[[ -n $resumed ]] || it_fail "g2 was never resumed"
extended=$(jq -r 'select(.step == "end") | .ts' "$T"/journal/*watch.journal | tail -n "$(wc -l <"$T/w2.out")" | head -n 1)
[[ -n $extended ]] || it_fail "no journaled extension for g2"
awk -v r="$resumed" -v e="$extended" 'BEGIN { exit !(r >= e) }' ||
	it_fail "g2 resumed at $resumed, before its volume was extended at $extended"
steps=$(check_steps w2 nospace)
stop_watch w2
it_assert_eq "$(vm_status g2)" running "g2 after the ring"
size=$(volsize vol2)
it_assert_eq "$size" $(((64 + 32 * steps) * MIB)) "vol2's size after $steps steps"
it_log "after ENOSPC: $steps extensions to $((size / MIB)) MiB"
stop_guest g2
check_data g2 vol2
it_pass
