#!/usr/bin/env bash
# test-quiesce: snapshot --quiesce against the real guest (qemu-ga), 2 disks: vda (the raw
# log the writer fdatasyncs) and vdb (ext4 on /mnt, where an appender writes and fsyncs a
# record 100 times a second and acknowledges each with FSACK).
#   1. a stale unread reply left in the agent's channel first (the framing must skip it);
#      then the snapshot: exit 0, frozen-ms in the result (reported), the guest thawed after
#      (guest-fsfreeze-status), the FSACK counter stalls during the freeze window and only
#      then (timestamps of every FSACK line against livemerge's own), the snapshot's backing
#      file of the fs disk is a clean filesystem (no journal replay: it was frozen).
#   2. the transaction refused (vdb's overlay in a missing directory): exit 1, chains as
#      before, vda's overlay removed, the guest thawed.
#   3. the watchdog: QEMU's answer to the transaction held back 4 s (the monitor goes through
#      a proxy that delays the transaction line) with --freeze-limit 1: livemerge thaws the
#      guest after ~1 s, the FSACK counter moves again before the transaction answers;
#      frozen-ms about 1000.
#   4. livemerge killed right after the freeze (LIVEMERGE_CRASH_AT=snapshot): the guest stays
#      frozen (FSACK still for 2 s), `recover` thaws it, no overlay, chains as before.
# The writer's data is checked live after each step and offline at the end.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
# shellcheck source=integration/lib-fault.sh
. "$IT_DIR/lib-fault.sh"
fault_setup

qemu-img create -q -f qcow2 "$T/img/vda.0.qcow2" 24M
guest_mkfs "$T/img/vdb.0.qcow2" 32M
GUEST_APPEND="lm.fsrate=100" start_guest g -f "$T/img/vdb.0.qcow2" "$T/img/vda.0.qcow2"
FLM_TARGET=$T/g.qmp
QGA=unix:$T/g.qga
fault_writing g vda

# ---------------------------------------------------------------- timestamps

# A fork-free sleep: read with a timeout on a FIFO nobody writes.
mkfifo "$T/.nap"
exec {NAP}<>"$T/.nap"
nap() { read -r -t "$1" -u "$NAP" _ || true; }

# fsack_logger: every FSACK line of the ack file, as "EPOCHSECONDS.us N", as it arrives.
fsack_logger() {
	local fd l buf=''
	exec {fd}<"$T/g.ack"
	while :; do
		if IFS= read -r -u "$fd" l; then
			l=$buf$l
			buf=''
			[[ $l != FSACK\ * ]] || printf '%s %s\n' "$EPOCHREALTIME" "${l##* }"
		else
			buf+=$l
			nap 0.003
		fi
	done
}
fsack_logger >"$T/fsack.ts" &
it_track fsack $!

# flm_ts ARGS...: flm, each stdout line prefixed by the time it came ($T/flm.ts); $T/flm.out
# as flm leaves it.
flm_ts() {
	FLM_RC=0
	FLM_CMD="livemerge -c $FLM_TARGET --json $*"
	it_log "\$ $FLM_CMD"
	{
		rc=0
		timeout -k 5 60 "$LM" -c "$FLM_TARGET" --journal "$FJ" --json "$@" 2>"$T/flm.err" </dev/null || rc=$?
		echo "$rc" >"$T/flm.rc"
	} | while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done >"$T/flm.ts"
	FLM_RC=$(cat "$T/flm.rc")
	cut -d' ' -f2- "$T/flm.ts" >"$T/flm.out"
	[[ ! -s $T/flm.err ]] || sed 's/^/    stderr: /' "$T/flm.err" | head -n 5 >&2
}

# msg_time TEXT: when livemerge printed the first message containing TEXT.
msg_time() {
	awk -v t="$1" 'index($0, t) { print $1; exit }' "$T/flm.ts"
}

# journal_time STEP: the journal's timestamp of STEP in its last operation.
journal_time() {
	jq -rsR --arg s "$1" '[split("\n")[] | fromjson?] | (map(.op) | max) as $op
		| [.[] | select(.op == $op and .step == $s) | .ts] | first' "$(fault_journal)"
}

# fsacks_between A B: FSACK lines that came strictly between times A and B.
fsacks_between() {
	awk -v a="$1" -v b="$2" '$1 > a && $1 < b { n++ } END { print n + 0 }' "$T/fsack.ts"
}

# gaps A B: the longest time without an FSACK line that overlaps the window A..B, and the
# longest elsewhere within 2 s of it: "SPANNING OUTSIDE" in seconds.
gaps() {
	awk -v a="$1" -v b="$2" '$1 >= a - 2 && $1 <= b + 2 {
			if (p) { g = $1 - p; if (p < b && $1 > a) { if (g > in_) in_ = g } else if (g > out) out = g }
			p = $1 }
		END { printf "%.3f %.3f\n", in_, out }' "$T/fsack.ts"
}

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

K=0
# snap_args: vda and vdb overlays of a new snapshot number.
snap_args() {
	K=$((K + 1))
	A=$T/img/vda.s$K.qcow2
	B=$T/img/vdb.s$K.qcow2
}

# ---------------------------------------------------------------- 1. a quiesced snapshot
nap 1 # the appender's rate, before
rate=$(awk -v now="$EPOCHREALTIME" '$1 > now - 1 { n++ } END { print n + 0 }' "$T/fsack.ts")
it_log "fs appender: $rate FSACKs in the last second"
((rate >= 5)) || it_fail "the fs appender is too slow to tell a freeze ($rate records/s)"

# a reply nobody reads, left in the agent's channel (QEMU hands it to the next client)
printf '{"execute":"guest-info"}\n' | socat -u - "UNIX-CONNECT:$T/g.qga" >/dev/null 2>&1 || true
before=$(fault_chains vda vdb)
snap_args
expect=$(jq -c --arg a "$A" --arg b "$B" '.vda = [$a] + .vda | .vdb = [$b] + .vdb' <<<"$before")
fsack_at_freeze=$(guest_last_fsack g)
flm_ts snapshot "vda=$A" "vdb=$B" --quiesce "$QGA"
((FLM_RC == 0)) || it_fail "snapshot --quiesce: exit $FLM_RC: $(flm__report)"
frozen_ms=$(flm_result | jq -r '."frozen-ms" // empty')
[[ $frozen_ms =~ ^[0-9.]+([eE][-+]?[0-9]+)?$ ]] || it_fail "no frozen-ms in the result: $(flm_result)"
awk -v m="$frozen_ms" 'BEGIN { exit !(m > 0 && m < 10000) }' || it_fail "frozen-ms $frozen_ms out of range"
it_assert_eq "$(fault_fsfreeze g)" thawed "guest-fsfreeze-status after snapshot --quiesce"
it_assert_eq "$(fault_chains vda vdb)" "$expect" "chains after snapshot --quiesce"
fz_sent=$(journal_time freeze)
th_sent=$(journal_time thaw)
fz_ans=$(msg_time 'guest quiesced')
th_ans=$(msg_time 'guest thawed')
tx_ans=$(msg_time 'snapshot taken')
[[ -n $fz_ans && -n $th_ans && -n $tx_ans && $fz_sent != null && $th_sent != null ]] ||
	it_fail "missing quiesce messages or journal steps: $(flm_messages | paste -sd'|' -)"
nap 1.2 # FSACKs after the thaw
inside=$(fsacks_between "$fz_ans" "$th_sent")
pre=$(fsacks_between "$(awk -v t="$fz_sent" 'BEGIN { printf "%.6f", t - 1 }')" "$fz_sent")
post=$(fsacks_between "$th_ans" "$(awk -v t="$th_ans" 'BEGIN { printf "%.6f", t + 1 }')")
read -r gap_in gap_out < <(gaps "$fz_sent" "$th_ans")
it_log "QUIESCE: frozen-ms $frozen_ms (livemerge); freeze sent -> answered $(ms "$fz_sent" "$fz_ans") ms," \
	"answered -> transaction answered $(ms "$fz_ans" "$tx_ans") ms, thaw sent -> answered $(ms "$th_sent" "$th_ans") ms;" \
	"FSACKs: $pre in the second before, $inside while surely frozen, $post in the second after;" \
	"the FSACK gap over the freeze $gap_in s, the longest elsewhere within 2 s $gap_out s"
# One record may have been in its fsync when the freeze came (and its FSACK line on the way).
((inside <= 1)) || it_fail "$inside FSACKs while the guest was frozen (between the freeze's and the thaw's answers)"
((pre >= 1)) || it_fail "no FSACK in the second before the freeze"
((post >= 1)) || it_fail "the fs appender did not resume within 1 s of the thaw"
# ... and it stalls only then: nothing near it stops it for long (a loaded host slows TCG, so
# "long" is a generous 2 s here; the measured figures are in the log line above)
awk -v g="$gap_out" 'BEGIN { exit !(g < 2) }' || it_fail "the fs appender stalled $gap_out s outside the freeze window"
fault_check_live g vda
QUIESCED_BASE=$T/img/vdb.0.qcow2
fsack_frozen=$fsack_at_freeze

# ---------------------------------------------------------------- 2. the transaction refused
before=$(fault_chains vda vdb)
snap_args
flm_ts snapshot "vda=$A" "vdb=$T/img/no-such-dir/vdb.s$K.qcow2" --quiesce "$QGA"
((FLM_RC == 1)) || it_fail "snapshot with an overlay in a missing directory: expected exit 1: $(flm__report)"
flm_messages | grep -q 'guest quiesced' || it_fail "the refused snapshot never froze the guest: $(flm_messages)"
flm_messages | grep -q 'guest thawed' || it_fail "the refused snapshot did not thaw: $(flm_messages)"
it_assert_eq "$(fault_fsfreeze g)" thawed "guest-fsfreeze-status after a refused transaction"
it_assert_eq "$(fault_chains vda vdb)" "$before" "chains after a refused transaction"
fault_assert_gone "$A"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after a refused transaction"
it_log "refused transaction: exit 1, frozen $(flm_result | jq -r '."frozen-ms"') ms, thawed: $(head -n 1 "$T/flm.err")"
fault_injected "transaction-refused"
fault_check_live g vda

# ---------------------------------------------------------------- 3. the watchdog
# A proxy on the monitor that holds the transaction line back 4 s before QEMU sees it.
cat >"$T/slow.sh" <<'EOF'
fifo=$(mktemp -u "$T/slow.XXXXXX")
mkfifo "$fifo"
socat - "UNIX-CONNECT:$T/g.qmp" <"$fifo" &
exec 3>"$fifo"
rm -f "$fifo"
while IFS= read -r line; do
	[[ $line != *'"execute":"transaction"'* ]] || sleep 4
	printf '%s\n' "$line" >&3
done
exec 3>&-
wait
EOF
socat "UNIX-LISTEN:$T/slow.sock,fork,unlink-early" "EXEC:env T=$T bash $T/slow.sh" 2>/dev/null </dev/null &
it_track slowproxy $!
n=100
until [[ -S $T/slow.sock ]]; do
	((n-- > 0)) || it_fail "the delaying proxy did not come up"
	nap 0.02
done
FLM_TARGET=$T/slow.sock
before=$(fault_chains vda vdb)
snap_args
expect=$(jq -c --arg a "$A" --arg b "$B" '.vda = [$a] + .vda | .vdb = [$b] + .vdb' <<<"$before")
flm_ts snapshot "vda=$A" "vdb=$B" --quiesce "$QGA" --freeze-limit 1
fault_injected "freeze-watchdog"
fz_ans=$(msg_time 'guest quiesced')
wd=$(msg_time 'takes longer than')
th_ans=$(msg_time 'guest thawed')
tx_ans=$(msg_time 'snapshot taken')
[[ -z $tx_ans ]] && tx_ans=$(tail -n 1 "$T/flm.ts" | cut -d' ' -f1)
frozen_ms=$(flm_result | jq -r '."frozen-ms" // empty')
it_log "watchdog: exit $FLM_RC; frozen-ms $frozen_ms; watchdog fired $(ms "$fz_ans" "${wd:-$fz_ans}") ms after the freeze," \
	"thawed $(ms "$fz_ans" "${th_ans:-$fz_ans}") ms after it, the transaction answered $(ms "$fz_ans" "$tx_ans") ms after it"
[[ -n $fz_ans && -n $wd && -n $th_ans ]] || it_fail "the watchdog did not thaw the guest: $(flm_messages | paste -sd'|' -)"
awk -v m="$frozen_ms" 'BEGIN { exit !(m >= 900 && m < 2500) }' || it_fail "frozen-ms $frozen_ms with --freeze-limit 1"
awk -v a="$th_ans" -v b="$tx_ans" 'BEGIN { exit !(b - a > 1.5) }' ||
	it_fail "the guest was not thawed well before the transaction answered (thawed $th_ans, answered $tx_ans)"
resumed=$(awk -v a="$fz_ans" '$1 > a + 0.05 { print $1; exit }' "$T/fsack.ts")
[[ -n $resumed ]] || it_fail "no FSACK after the freeze"
it_log "watchdog: FSACKs stalled $(ms "$fz_ans" "$resumed") ms after the freeze answered," \
	"$(fsacks_between "$th_ans" "$tx_ans") FSACKs came between the watchdog's thaw and the transaction's answer"
awk -v r="$resumed" -v b="$tx_ans" -v a="$fz_ans" 'BEGIN { exit !(r < b - 1 && r > a + 0.8) }' ||
	it_fail "FSACKs did not stall for the freeze and resume before the transaction answered"
it_assert_eq "$(fault_fsfreeze g)" thawed "guest-fsfreeze-status after the watchdog"
now=$(fault_chains vda vdb)
case $FLM_RC in
0) it_assert_eq "$now" "$expect" "chains after a snapshot that outlived its freeze (exit 0)" ;;
1) it_assert_eq "$now" "$before" "chains after a snapshot that outlived its freeze (exit 1)" ;;
*) it_fail "snapshot that outlived its freeze: exit $FLM_RC: $(flm__report)" ;;
esac
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after the watchdog"
fault_check_live g vda
FLM_TARGET=$T/g.qmp

# ---------------------------------------------------------------- 4. killed while frozen
before=$(fault_chains vda vdb)
snap_args
FLM_CRASH=snapshot flm_expect 137 snapshot "vda=$A" "vdb=$B" --quiesce "$QGA"
fault_injected "killed-while-frozen"
it_assert_eq "$(fault_fsfreeze g)" frozen "the guest after livemerge was killed right after the freeze"
f1=$(guest_last_fsack g)
a1=$(guest_last_ack g vda)
nap 2
f2=$(guest_last_fsack g)
((f2 <= f1 + 1)) || it_fail "the fs appender went on with the guest frozen: FSACK $f1 -> $f2"
fault_writing g vda
flm_expect 0 recover
flm_messages | grep -q '^guest thawed' || it_fail "recover did not thaw the guest: $(flm_messages)"
it_assert_eq "$(fault_fsfreeze g)" thawed "the guest after recover"
it_assert_eq "$(fault_chains vda vdb)" "$before" "chains after recover"
fault_assert_gone "$A" "$B"
n=100
while (($(guest_last_fsack g) <= f2)); do
	((n-- > 0)) || it_fail "the fs appender did not resume within 5 s of recover's thaw"
	nap 0.05
done
it_log "killed while frozen: FSACK still at $f1..$f2 for 2 s (vda acked $a1 -> $(guest_last_ack g vda) meanwhile);" \
	"recover thawed the guest: $(flm_messages | grep '^guest thawed')"
flm_expect 0 recover
flm_messages | grep -q 'nothing to recover' || it_fail "a second recover did something: $(flm_messages)"
fault_check_live g vda

# ---------------------------------------------------------------- offline
final=$(fault_chains vda vdb)
fsack=$(guest_last_fsack g)
stop_guest g
grep -q '^ERR' "$T/g.ack" && it_fail "the guest's writer reported errors: $(grep -m1 '^ERR' "$T/g.ack")"
fault_check_offline g vda "$(jq -r '.vda[0]' <<<"$final")"
guest_fs_require
# the backing file of the first quiesced snapshot holds the fs as frozen: clean as it is
qemu-img convert -q -O raw "$QUIESCED_BASE" "$T/quiesced.raw"
out=$(e2fsck -fn "$T/quiesced.raw" 2>&1) || it_fail "the fs in the quiesced snapshot is not clean: $out"
((fsack_frozen > 0)) || it_fail "no fs record was acknowledged before the freeze"
records=$(guest_fs_records "$T/quiesced.raw")
((records >= fsack_frozen)) || it_fail "the quiesced fs holds $records records, $fsack_frozen were acknowledged before the freeze"
it_log "quiesced snapshot's fs: clean without a journal replay, $records records in order ($fsack_frozen acknowledged before the freeze)"
# the final chain's fs: every acknowledged record (after a journal replay)
qemu-img convert -q -O raw "$(jq -r '.vdb[0]' <<<"$final")" "$T/final.raw"
rc=0
out=$(e2fsck -fy "$T/final.raw" 2>&1) || rc=$?
((rc <= 1)) || it_fail "e2fsck -fy on the final fs: exit $rc: $out"
((fsack > fsack_frozen)) || it_fail "the fs appender acknowledged nothing after the first freeze ($fsack)"
records=$(guest_fs_records "$T/final.raw")
((records >= fsack)) || it_fail "the final fs holds $records good records, $fsack were acknowledged"
it_log "final fs: $records records in order ($fsack acknowledged)"
fault_figures
it_pass
