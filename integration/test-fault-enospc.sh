#!/usr/bin/env bash
# test-fault-enospc: an active commit whose base runs out of space. vda's base lives on a
# small tmpfs, vdb's on the ordinary disk; each overlay holds 16 MiB more than that tmpfs has
# free (written before boot, past the guest's 16 MiB log ring), and the guest writes its log
# into both overlays throughout.
#   1. without --wait-for-space: vda's job pauses (on-error=enospc), livemerge says which disk
#      and how far it got, cancels every job: exit 1, every chain as before (vdb too, whose job
#      had all the space it needed), no job left, every acknowledged write there;
#   2. with --wait-for-space 3 and no space coming: exit 1 after ~3 s, nothing changed;
#   3. with --wait-for-space 60 and the tmpfs grown (mount -o remount,size=) a few seconds
#      after the job paused: livemerge resumes it, both disks pivot, exit 0, data intact.
# Offline after quit: the checker, the pre-written data read back through the merged chains,
# qemu-img check on the bases.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
# shellcheck source=integration/lib-fault.sh
. "$IT_DIR/lib-fault.sh"
fault_setup

SMALL=$T/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=8M,mode=0700 lmfault "$SMALL" || it_fail "cannot mount a tmpfs (needs root)"
fault_on_exit "umount -l '$SMALL'"
free_kib() { df -k --output=avail "$SMALL" | tail -n 1 | tr -d ' '; }

qemu-img create -q -f qcow2 "$SMALL/vda.0.qcow2" 64M
qemu-img create -q -f qcow2 "$T/img/vdb.0.qcow2" 64M
FILL="write -P 0x5a 16M 16M"
for d in vda vdb; do
	base=$T/img/$d.0.qcow2
	[[ $d == vdb ]] || base=$SMALL/vda.0.qcow2
	qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$T/img/$d.1.qcow2"
	qemu_io_check "$T/img/$d.1.qcow2" "$FILL"
done
it_log "tmpfs for vda's base: $(free_kib) KiB free; each overlay holds 16 MiB past the ring"
start_guest g "$T/img/vda.1.qcow2" "$T/img/vdb.1.qcow2"
FLM_TARGET=$T/g.qmp
fault_writing g vda vdb
before=$(fault_chains vda vdb)
expect=$(jq -c 'map_values(.[1:])' <<<"$before")

# ---------------------------------------------------------------- 1. no space: cancel
t0=$SECONDS
flm_expect 1 commit vda vdb
fault_injected "enospc-cancel"
err=$(cat "$T/flm.err")
grep -qE 'vda: no space left on device .* after [0-9]+ of [0-9]+ bytes' <<<"$err" ||
	it_fail "the message does not say which disk ran out of space and how far it got: $err"
grep -q -- '--wait-for-space' <<<"$err" || it_fail "the message does not say what to do: $err"
it_log "without --wait-for-space: exit 1: $(head -n 1 "$T/flm.err")"
it_assert_eq "$(flm_result | jq -c '[.disks[] | {(.disk): [.chain[].filename]}] | add')" "$before" "chains in the result"
it_assert_eq "$(fault_chains vda vdb)" "$before" "chains after running out of space"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after running out of space"
it_log "tmpfs after the cancelled commit: $(free_kib) KiB free"
fault_writing g vda vdb
fault_check_live g vda vdb
it_log "out of space, cancelled: done in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- 2. no space within the wait
t0=$SECONDS
flm_expect 1 commit vda vdb --wait-for-space 3
fault_injected "enospc-wait-in-vain"
grep -q 'no space appeared within 3 s' "$T/flm.err" || it_fail "the message does not say the wait ran out: $(cat "$T/flm.err")"
it_log "--wait-for-space 3 with no space: exit 1 after $((SECONDS - t0)) s: $(head -n 1 "$T/flm.err")"
it_assert_eq "$(fault_chains vda vdb)" "$before" "chains after waiting for space in vain"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after waiting for space in vain"
fault_check_live g vda vdb

# ---------------------------------------------------------------- 3. wait for space, and it comes
t0=$SECONDS
flm_bg commit vda vdb --wait-for-space 60
fault_injected "enospc-wait"
flm_wait_line '*vda: no space left on device*the job is paused*' 30
t1=$(date +%s%N)
msg=$(flm_messages | grep -m1 'no space left')
grep -qE '^vda: no space left on device .* after [0-9]+ of [0-9]+ bytes' <<<"$msg" ||
	it_fail "the pause message does not say which disk ran out of space and how far it got: $msg"
sleep 3
mount -o remount,size=128M "$SMALL" || it_fail "cannot grow the tmpfs"
it_log "tmpfs grown to 128M 3 s after the pause: $(free_kib) KiB free"
flm_bg_wait 90
secs=$(awk -v ns=$(($(date +%s%N) - t1)) 'BEGIN { printf "%.1f", ns / 1e9 }')
((FLM_RC == 0)) || it_fail "commit --wait-for-space with space appearing: $(flm__report)"
it_log "with --wait-for-space 60: exit 0, $secs s after the pause; messages: $(flm_messages | grep -iE 'space|resum' | head -n 3 | paste -sd'|' -)"
it_assert_eq "$(fault_chains vda vdb)" "$expect" "chains after the commit that waited for space"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after the commit that waited for space"
fault_writing g vda vdb
fault_check_live g vda vdb
it_log "out of space, waited: done in $((SECONDS - t0)) s"

stop_guest g
grep -q '^ERR' "$T/g.ack" && it_fail "the guest's writer reported errors: $(grep -m1 '^ERR' "$T/g.ack")"
fault_check_offline g vda "$SMALL/vda.0.qcow2"
fault_check_offline g vdb "$T/img/vdb.0.qcow2"
qemu_io_check -r "$SMALL/vda.0.qcow2" "read -P 0x5a 16M 16M"
qemu_io_check -r "$T/img/vdb.0.qcow2" "read -P 0x5a 16M 16M"
fault_qemu_img_check "$SMALL/vda.0.qcow2" "$T/img/vdb.0.qcow2"
fault_figures
it_pass
