#!/usr/bin/env bash
# test-durable-random: QEMU SIGKILLed at random moments during and right after merges, with
# a writer that writes and flushes live (the whole time, or idle once the merge starts: then
# nothing else flushes for the merge; always idle then on the VM, see round). Rounds alternate a paused -blockdev VM
# (writes through HMP qemu-io on a second monitor) and qemu-storage-daemon (writes through
# its NBD export); each picks stream, stream --base, intermediate or active commit, with or
# without --delete, and a moment: a delay after livemerge starts (in its job or past it), or
# right after livemerge's exit. Once QEMU is gone, livemerge gets 2 s to exit (it would try
# to reconnect for about 17 s), then it is killed too. The jobs run at --speed so that the delays land inside them.
# Whatever livemerge's exit status, offline:
#   - qemu-img check finds no corruption in any image (leaked clusters are allowed: a write
#     or a copy in flight leaks its cluster when QEMU dies);
#   - livemerge exited 0: the headers name the chain its result shows, and every layer's data
#     and every write acknowledged (written and flushed) before the kill read back through its
#     top;
#   - otherwise: they read back through the old top or through the expected new top (the
#     merge either did not happen or did; nothing is deleted before the end).
# DUR_SEED (default fixed, printed) replays a run; DUR_ROUNDS (default 12) rounds, but no new
# round starts after DUR_BUDGET seconds (default 150). Every round runs; the verdict names
# each one that failed, with its seed.
# shellcheck disable=SC2317 # (functions run through dur_run)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-durable.sh
. "$IT_DIR/lib-durable.sh"
lm_setup

SEED=${DUR_SEED:-1207}
ROUNDS=${DUR_ROUNDS:-12}
BUDGET=${DUR_BUDGET:-150}
SPEED=8M
# the writer's blocks: 64 KiB each from 32 MiB on, a pattern of their own
WBLOCK=65536
WBASE=$((32 * IT_MIB))
it_log "seed $SEED (replay: DUR_SEED=$SEED integration/run durable-random)"
RANDOM=$SEED

# hmp_writer VM QDEV ACKS: until $T/VM-writer.stop exists or a write fails: write a block,
# flush, and once QEMU reported both done, append "PATTERN OFF LEN" to ACKS. Runs as its own
# process: a failure (QEMU killed) ends the writer only.
hmp_writer() {
	local vm=$1 qdev=$2 acks=$3 k=0 off pat w f reply n
	it_fail() { exit 0; }
	while [[ ! -e $T/$vm-writer.stop ]]; do
		off=$((WBASE + k * WBLOCK))
		pat=$(printf '0x%02x' $((0x40 + k % 0x40)))
		w=$(jq -nc --arg c "qemu-io -d /machine/peripheral/$qdev/virtio-backend \"write -P $pat $off $WBLOCK\"" \
			'{execute: "human-monitor-command", arguments: {"command-line": $c}}')
		f=$(jq -nc --arg c "qemu-io -d /machine/peripheral/$qdev/virtio-backend \"flush\"" \
			'{execute: "human-monitor-command", arguments: {"command-line": $c}}')
		reply=$(qmpq "$T/$vm.qmp2" "$w" "$f") || exit 0
		[[ $(jq -sc 'map(.return) | unique' <<<"$reply") == '[""]' ]] || exit 0
		# qemu-io reports on QEMU's stdout; no report, no acknowledgement
		for ((n = 0; n < 40; n++)); do
			grep -qx "wrote $WBLOCK/$WBLOCK bytes at offset $off" "$T/$vm.out" && break
			sleep 0.025
		done
		((n < 40)) || exit 0
		! grep -qiE 'failed|error' "$T/$vm.out" || exit 0
		echo "$pat $off $WBLOCK" >>"$acks"
		k=$((k + 1))
	done
}

# nbd_writer QSD EXPORT ACKS: as hmp_writer, through the daemon's NBD export.
nbd_writer() {
	local qsd=$1 export=$2 acks=$3 k=0 off pat out
	while [[ ! -e $T/$qsd-writer.stop ]]; do
		off=$((WBASE + k * WBLOCK))
		pat=$(printf '0x%02x' $((0x40 + k % 0x40)))
		out=$(timeout 10 qemu-io -f raw -c "write -P $pat $off $WBLOCK" -c flush \
			"nbd+unix:///$export?socket=$T/$qsd.nbd" 2>&1) || exit 0
		! grep -qiE 'failed|error|cannot' <<<"$out" || exit 0
		grep -qx "wrote $WBLOCK/$WBLOCK bytes at offset $off" <<<"$out" || exit 0
		echo "$pat $off $WBLOCK" >>"$acks"
		k=$((k + 1))
	done
}

# reads_back FILE KEY ACKS: every range of KEY and of ACKS reads back through FILE; else
# false, with what failed in WHY.
reads_back() {
	local file=$1 out n bad
	local -a cmds=() args=()
	mapfile -t cmds < <(exp_reads "$2"; awk '{ print "read -P " $1 " " $2 " " $3 }' "$3")
	for c in "${cmds[@]}"; do args+=(-c "$c"); done
	WHY=
	[[ -f $file ]] || { WHY="${file##*/} does not exist"; return 1; }
	out=$(qemu-io -r -f qcow2 "${args[@]}" "$file" 2>&1) || true
	n=$(grep -cE '^read [0-9]+/[0-9]+ bytes at offset [0-9]+$' <<<"$out" || true)
	bad=$(grep -ciE 'failed|error|cannot' <<<"$out" || true)
	if ((bad > 0 || n != ${#cmds[@]})); then
		WHY="${file##*/}: $bad of ${#cmds[@]} reads failed: $(grep -iE 'failed|error|cannot' <<<"$out" | head -n 3 | sed 's/, [0-9]* bytes$//' | paste -sd ';' -)"
		return 1
	fi
}

# lm_wait PID SECS: wait up to SECS for livemerge (PID) to exit, SIGKILL it then; its exit
# status in LM_RC (137: killed here).
lm_wait() {
	local n=$(($2 * 20))
	while it__alive "$1" && ((n-- > 0)); do
		sleep 0.05
	done
	if it__alive "$1"; then
		it_log "livemerge still running after $2 s: SIGKILL"
		kill -KILL "$1" 2>/dev/null || true
	fi
	LM_RC=0
	wait "$1" 2>/dev/null || LM_RC=$?
}

# round R KIND OP DELETE WRITER MOMENT DELAY_MS: see the top. WRITER busy: the writer goes on
# until the kill; idle: it stops before livemerge starts. MOMENT "in": SIGKILL DELAY_MS
# after livemerge started; "after": DELAY_MS after it exited.
round() {
	local r=$1 kind=$2 op=$3 delete=$4 writer=$5 moment=$6 delay=$7 name dir top i old new verb wpid lmpid
	local acks key t0 why_old disk
	local -a args=()
	name=r$r-$kind
	dir=$T/img/$name
	key=$name
	acks=$T/$name.acks
	mkdir -p "$dir"
	: >"$acks"
	# 1 MiB of pattern (mk_chain) and 4 MiB more at 4+4i MiB per layer: jobs that take a while
	top=$(mk_chain "$dir" d0 2 "$DUR_SIZE")
	exp_chain "$key" 2
	for i in 0 1 2; do
		qemu_io_check "$dir/d0.$i.qcow2" "write -P $(printf '0x%02x' $((0x20 + i))) $((4 + 4 * i))M 4M"
		exp_add "$key" "$(printf '0x%02x' $((0x20 + i)))" $(((4 + 4 * i) * IT_MIB)) $((4 * IT_MIB))
	done
	old=$top
	new=$top
	case $op in
	stream) verb=stream ;;
	stream-base) verb=stream args=(--base "$dir/d0.0.qcow2") ;;
	commit-mid) verb=commit args=(--top "$dir/d0.1.qcow2") ;;
	commit-active) verb=commit new=$dir/d0.1.qcow2 ;;
	esac
	if [[ $kind == vm ]]; then
		start_vm_2mon "$name" "$top"
		LM_SOCK=$T/$name.qmp
		(hmp_writer "$name" vda "$acks") </dev/null &
		disk=vda
	else
		dur_start qsd "$name" "$top"
		(nbd_writer "$name" disk0 "$acks") </dev/null &
		disk=exp0
	fi
	wpid=$!
	it_track "$name-writer" "$wpid"
	# a few acknowledged writes before the merge starts
	for ((i = 0; i < 50; i++)); do
		(($(wc -l <"$acks") >= 2)) && break
		sleep 0.1
	done
	(($(wc -l <"$acks") >= 2)) || it_fail "the writer acknowledged no write in 5 s"
	if [[ $writer == idle ]]; then
		touch "$T/$name-writer.stop"
		wait "$wpid" || true
	fi
	it_log "round $r: $kind $verb ${args[*]} ${delete:+--delete}, writer $writer, SIGKILL $moment $delay ms"
	t0=$(date +%s%N)
	"$LM" -c "$LM_SOCK" --json "$verb" "$disk" "${args[@]}" --speed "$SPEED" ${delete:+--delete} \
		>"$T/lm.out" 2>"$T/lm.err" </dev/null &
	lmpid=$!
	it_track "$name-lm" "$lmpid"
	if [[ $moment == after ]]; then
		lm_wait "$lmpid" 90
		sleep "$(awk -v ms="$delay" 'BEGIN { printf "%.3f", ms / 1000 }')"
		dur_end "$name"
	else
		sleep "$(awk -v ms="$delay" 'BEGIN { printf "%.3f", ms / 1000 }')"
		dur_end "$name"
		lm_wait "$lmpid" 2
	fi
	rm -f -- "$T/$name-lm.pid"
	LM_CMD="livemerge --json $verb $disk ${args[*]} --speed $SPEED ${delete:+--delete}"
	touch "$T/$name-writer.stop"
	wait "$wpid" || true
	rm -f -- "$T/$name-writer.pid"
	it_log "round $r: livemerge exit $LM_RC after $((($(date +%s%N) - t0) / 1000000)) ms;" \
		"$(wc -l <"$acks") writes acknowledged; $(tail -n 1 "$T/lm.err")"

	dur_img_check 0 "$dir"/*.qcow2
	if ((LM_RC == 0)); then
		it_assert_eq "$(dur_disk_chain "$disk" | jq -r '.[0]')" "$new" "the top in livemerge's result"
		it_assert_eq "$(dur_header_chain "$new")" "$(dur_disk_chain "$disk")" \
			"the chain the image headers name after the kill"
		reads_back "$new" "$key" "$acks" || it_fail "livemerge exited 0, then: $WHY"
	else
		((LM_RC != 0 && LM_RC != 2)) || it_fail "unexpected exit: $(lm_report)"
		reads_back "$old" "$key" "$acks" && return 0
		why_old=$WHY
		[[ $new != "$old" ]] && reads_back "$new" "$key" "$acks" && return 0
		it_fail "livemerge exit $LM_RC; through the old top: $why_old${WHY:+; through the new top: $WHY}"
	fi
}

ops=(stream stream-base commit-mid commit-active)
start=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
	if ((SECONDS - start > BUDGET)); then
		it_log "budget of $BUDGET s spent: $((r - 1)) rounds"
		break
	fi
	kind=vm
	((r % 2)) || kind=qsd
	op=${ops[RANDOM % ${#ops[@]}]}
	delete=
	((RANDOM % 2)) && delete=1
	writer=busy
	((RANDOM % 2)) && writer=idle
	# HMP qemu-io writing while a job starts or ends can hang QEMU 7.2's main loop (seen: no
	# answer to job-finalize for 30 s): on the VM the writer only writes before the merge
	[[ $kind == qsd ]] || writer=idle
	if ((RANDOM % 3 == 0)); then
		moment=after delay=$((RANDOM % 100))
	else
		moment=in delay=$((RANDOM % 1500))
	fi
	dur_run "round $r (seed $SEED): $kind $op${delete:+ --delete}, writer $writer, kill $moment ${delay}ms" \
		"r$r-$kind" round "$r" "$kind" "$op" "$delete" "$writer" "$moment" "$delay"
done
dur_verdict
