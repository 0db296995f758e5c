# shellcheck shell=bash
# integration/lib-fault.sh: helpers for the fault-injection and quiesce tests
# (test-fault-*.sh, test-quiesce.sh). Source it after lib.sh and guest/run-guest.sh.
#
#   fault_setup              it_setup + guest build + $T/img, journals in $FJ ($T/j), figures
#   fault_on_exit CMD        run CMD (eval'ed) when the test ends (lib.sh's it_on_exit)
#   flm ARGS...              livemerge -c $FLM_TARGET --journal $FJ --json ARGS (FLM_CRASH=STEP:
#                            with LIVEMERGE_CRASH_AT=STEP); stdout $T/flm.out, stderr
#                            $T/flm.err, exit status FLM_RC
#   flm_expect RC ARGS...    flm, fail unless it exits RC
#   flm_kill_on GLOB ARGS... flm in the background; SIGKILL it the moment a stdout line matches
#                            GLOB (FLM_KILLED=1 if it was still running then)
#   flm_bg / flm_bg_wait     flm in the background / wait for it
#   flm_wait_line GLOB SECS  wait until a line of the background run's stdout matches GLOB
#   fault_chains [DISK...]   {"vda":[files, active first],...} from livemerge --json chain
#   fault_jobs               QEMU's query-jobs (direct, not through livemerge)
#   fault_fsfreeze NAME      the guest's guest-fsfreeze-status
#   fault_journal            the journal file of $FLM_TARGET
#   fault_journal_steps      the steps of the journal's last operation, space separated
#   fault_check_live NAME DISK...     checker on each disk, live (counted in the figures)
#   fault_check_offline NAME DISK FILE  checker offline through FILE's chain
#   fault_figures            the figures line (faults, steps, checks, acknowledged writes
#                            proven: distinct seqs per guest and disk, each counted once however
#                            many checks proved it); fails if no check proved any write
#
# QEMU's QMP socket takes one client at a time: nothing here talks to $T/NAME.qmp directly
# while a livemerge run holds it (a second client would wait for the first to leave).

# shellcheck disable=SC2034 # FLM_* results are read by the tests that source this
FJ=
FLM_TARGET=
FLM_RC=0
FLM_KILLED=0
FAULT_N=0
FAULT_STEPS=()
FAULT_CHECKS=0
declare -gA FAULT_LAST_ACK=()
# per NAME:DISK, the acknowledged seq ranges the checks proved, one "LO HI" a line
declare -gA FAULT_SEQS=()

fault_setup() {
	it_setup
	it_require_lm
	guest_build
	mkdir -p "$T/img" "$T/j"
	FJ=$T/j
}

# fault_on_exit CMD: lib.sh's it_on_exit.
fault_on_exit() {
	it_on_exit "$1"
}

# fault_injected WHAT: count one injected fault, covering step WHAT.
fault_injected() {
	FAULT_N=$((FAULT_N + 1))
	FAULT_STEPS+=("$1")
}

# ---------------------------------------------------------------- running livemerge

flm__report() {
	echo "[$FLM_CMD] exit $FLM_RC; stderr: $(head -c 600 "$T/flm.err" | tr '\n' ' '); stdout tail: $(tail -n 3 "$T/flm.out" | cut -c 1-300 | tr '\n' ' ')"
}

flm() {
	local -a env=()
	[[ -z ${FLM_CRASH:-} ]] || env=(LIVEMERGE_CRASH_AT="$FLM_CRASH")
	FLM_RC=0
	FLM_CMD="${FLM_CRASH:+LIVEMERGE_CRASH_AT=$FLM_CRASH }livemerge -c $FLM_TARGET --json $*"
	it_log "\$ $FLM_CMD"
	# (the braces keep bash's "Killed" notice of a crash point out of the log)
	{ timeout -k 5 "${FLM_TIMEOUT:-90}" env "${env[@]}" "$LM" -c "$FLM_TARGET" --journal "$FJ" --json "$@" \
		>"$T/flm.out" 2>"$T/flm.err" </dev/null; } 2>/dev/null || FLM_RC=$?
	[[ ! -s $T/flm.err ]] || sed 's/^/    stderr: /' "$T/flm.err" | head -n 10 >&2
}

flm_expect() {
	local want=$1
	shift
	flm "$@"
	((FLM_RC == want)) || it_fail "expected exit $want: $(flm__report)"
}

# flm_messages: the "message" lines of the last run, one per line.
flm_messages() {
	jq -rR 'fromjson? | select(.type == "message") | .message' "$T/flm.out"
}

# flm_result: the result line of the last run (compact JSON; empty if there is none).
flm_result() {
	jq -cR 'fromjson? | select(.type == "result")' "$T/flm.out" | tail -n 1
}

# flm_kill_on GLOB ARGS...: see the top. Its stdout is read line by line through a FIFO, so
# the SIGKILL follows the matching line within a millisecond or so. FLM_RC is 137 when the
# kill hit it; FLM_KILLED=0 if livemerge had ended by itself.
flm_kill_on() {
	local glob=$1 fifo=$T/flm.fifo pid line hit=0 rc
	shift
	FLM_RC=0
	FLM_KILLED=0
	FLM_CMD="livemerge -c $FLM_TARGET --json $* (SIGKILL on a line like $glob)"
	it_log "\$ $FLM_CMD"
	rm -f "$fifo"
	mkfifo "$fifo"
	(exec "$LM" -c "$FLM_TARGET" --journal "$FJ" --json "$@" >"$fifo" 2>"$T/flm.err" </dev/null) &
	pid=$!
	it_track flm "$pid"
	: >"$T/flm.out"
	while :; do
		rc=0
		IFS= read -r -t 60 line || rc=$?
		((rc == 0)) || break
		printf '%s\n' "$line" >>"$T/flm.out"
		# shellcheck disable=SC2053 # $glob is a pattern
		if ((hit == 0)) && [[ $line == $glob ]]; then
			kill -KILL "$pid" 2>/dev/null && FLM_KILLED=1
			hit=1
		fi
	done <"$fifo"
	# read's status above 128: it timed out (EOF is 1)
	if ((rc > 128)); then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		rm -f "$T/flm.pid" "$fifo"
		it_fail "flm_kill_on: livemerge printed nothing for 60 s: $(flm__report)"
	fi
	wait "$pid" 2>/dev/null || FLM_RC=$?
	rm -f "$T/flm.pid" "$fifo"
	((hit == 1)) || it_fail "flm_kill_on: no line like $glob: $(flm__report)"
	# shellcheck disable=SC2034 # read by the tests
	((FLM_RC == 137)) || FLM_KILLED=0
}

# flm_bg ARGS...: flm in the background (pid FLM_PID); stdout $T/flm.out as it comes.
flm_bg() {
	local -a env=()
	[[ -z ${FLM_CRASH:-} ]] || env=(LIVEMERGE_CRASH_AT="$FLM_CRASH")
	FLM_CMD="livemerge -c $FLM_TARGET --json $*"
	it_log "\$ $FLM_CMD &"
	: >"$T/flm.out"
	(exec env "${env[@]}" "$LM" -c "$FLM_TARGET" --journal "$FJ" --json "$@" >"$T/flm.out" 2>"$T/flm.err" </dev/null) &
	FLM_PID=$!
	it_track flm "$FLM_PID"
}

# flm_bg_wait SECS: wait up to SECS for the background run to end; its status in FLM_RC.
flm_bg_wait() {
	local n=$(($1 * 20))
	while it__alive "$FLM_PID" && ((n-- > 0)); do
		sleep 0.05
	done
	if it__alive "$FLM_PID"; then
		kill -KILL "$FLM_PID" 2>/dev/null || true
		wait "$FLM_PID" 2>/dev/null || true
		rm -f "$T/flm.pid"
		it_fail "livemerge still running after $1 s: $(flm__report)"
	fi
	FLM_RC=0
	wait "$FLM_PID" 2>/dev/null || FLM_RC=$?
	rm -f "$T/flm.pid"
	[[ ! -s $T/flm.err ]] || sed 's/^/    stderr: /' "$T/flm.err" | head -n 10 >&2
}

# flm_wait_line GLOB SECS: wait until a complete line of the background run's stdout matches
# GLOB; fail if it ends first or SECS pass.
flm_wait_line() {
	local glob=$1 n=$(($2 * 20)) line
	while ((n-- > 0)); do
		while IFS= read -r line; do
			# shellcheck disable=SC2053
			[[ $line == $glob ]] && return 0
		done < <(guest__ack_lines "$T/flm.out")
		it__alive "$FLM_PID" || it_fail "livemerge ended before a line like $glob: $(flm__report)"
		sleep 0.05
	done
	it_fail "no line like $glob within $2 s: $(flm__report)"
}

# ---------------------------------------------------------------- state

# fault_chains [DISK...]: every (or each named) disk's chain of files as livemerge shows it,
# one compact JSON object {"disk": [active file, ..., base file]}.
fault_chains() {
	local out rc=0
	out=$(timeout 30 "$LM" -c "$FLM_TARGET" --json chain "$@" 2>&1 </dev/null) || rc=$?
	((rc == 0)) || it_fail "livemerge -c $FLM_TARGET --json chain $*: exit $rc: $out"
	jq -sc 'map({(.disk): [.chain[].filename]}) | add' <<<"$out"
}

# fault_qmp_sock: the real monitor of the guest (FAULT_QMP, default $T/g.qmp).
fault_jobs() {
	qmp_raw "${FAULT_QMP:-$T/g.qmp}" '{"execute":"query-jobs"}' | jq -c '[.return[] | {id, status}]'
}

fault_fsfreeze() {
	local r
	r=$(guest_qga "$1" '{"execute":"guest-fsfreeze-status"}') || it_fail "guest-fsfreeze-status: $r"
	jq -r .return <<<"$r"
}

fault_journal() {
	local t=${FLM_TARGET#unix:}
	echo "$FJ/${t//\//_}.journal"
}

fault_journal_steps() {
	local f
	f=$(fault_journal)
	[[ -f $f ]] || it_fail "no journal $f"
	jq -rsR '[split("\n")[] | fromjson?] | (map(.op) | max) as $op
		| [.[] | select(.op == $op) | .step] | join(" ")' "$f"
}

# ---------------------------------------------------------------- data checks

# fault__count_check NAME DISK OUT: record what a passed check (checker summary OUT) proved:
# the acknowledged seqs it names. The guest writes all the time, so a check that had no
# acknowledged write to prove fails.
fault__count_check() {
	local key=$1:$2 out=$3 re
	re='^disk [^:]+: acked ([0-9]+), .*, seqs ([0-9]+)\.\.([0-9]+) checked$'
	[[ $out =~ $re ]] || it_fail "check of $2: no acknowledged write checked, or output not understood: $out"
	((BASH_REMATCH[1] > 0 && BASH_REMATCH[3] == BASH_REMATCH[1] && BASH_REMATCH[2] <= BASH_REMATCH[3])) ||
		it_fail "check of $2: checker output not consistent: $out"
	FAULT_CHECKS=$((FAULT_CHECKS + 1))
	FAULT_SEQS[$key]+="${BASH_REMATCH[2]} ${BASH_REMATCH[3]}"$'\n'
	FAULT_LAST_ACK[$key]=${BASH_REMATCH[1]}
}

# fault_acked_proven: how many distinct acknowledged writes the checks so far proved (the
# union of their seq ranges, per guest and disk).
fault_acked_proven() {
	local key total=0 n
	for key in "${!FAULT_SEQS[@]}"; do
		n=$(printf '%s' "${FAULT_SEQS[$key]}" | sort -n -k1,1 -k2,2 |
			awk '{ if (n && $1 <= hi + 1) { if ($2 > hi) hi = $2 } else { if (n) s += hi - lo + 1; lo = $1; hi = $2; n = 1 } }
				END { if (n) s += hi - lo + 1; print s + 0 }')
		total=$((total + n))
	done
	echo "$total"
}

fault_check_live() {
	local name=$1 d out
	shift
	for d; do
		out=$(guest_check_live "$name" "$d") || it_fail "live check of $d: $out"
		fault__count_check "$name" "$d" "$out"
	done
	it_log "live check: $(printf '%s ' "$@")ok (acked ${FAULT_LAST_ACK[$name:$1]}...)"
}

fault_check_offline() {
	local out
	out=$(guest_check "$1" "$2" "$3" 2>&1) || it_fail "offline check of $2 through $3: $out"
	fault__count_check "$1" "$2" "$out"
	it_log "offline: $out"
}

# fault_qemu_img_check FILE...: qemu-img check: no corruption (leaked clusters are counted in
# FAULT_LEAKS and reported, exit 3 is "leaks only"). The JSON report is on stdout alone: each
# leaked cluster is also a "Leaked cluster N ..." line on stderr.
FAULT_LEAKS=0
fault_qemu_img_check() {
	local f out rc leaks
	for f; do
		rc=0
		out=$(qemu-img check --output=json "$f" 2>"$T/.img-check.err") || rc=$?
		if ((rc != 0 && rc != 3)); then
			it_fail "qemu-img check $f: exit $rc: $(qemu-img check "$f" 2>&1 | head -n 5 | tr '\n' ' ')"
		fi
		leaks=$(jq -r '."leaks" // 0' <<<"$out")
		[[ $(jq -r '."corruptions" // 0' <<<"$out") == 0 ]] || it_fail "qemu-img check $f: corruptions: $out"
		FAULT_LEAKS=$((FAULT_LEAKS + leaks))
		it_log "qemu-img check ${f##*/}: exit $rc, $leaks leaked clusters"
	done
}

# fault_writing NAME DISK...: the guest still writes: each DISK acknowledges 10 more blocks.
fault_writing() {
	local name=$1 d a
	shift
	for d; do
		a=$(guest_last_ack "$name" "$d")
		guest_wait_ack "$name" "$d" $((a + 10)) 20
	done
}

fault_figures() {
	local steps acked
	steps=$(printf '%s\n' "${FAULT_STEPS[@]}" | awk '!s[$0]++' | paste -sd, -)
	acked=$(fault_acked_proven)
	it_log "FIGURES: faults injected $FAULT_N; steps covered ${steps:-none};" \
		"checker runs $FAULT_CHECKS; acknowledged writes checked $acked (distinct)" \
		"(last acked: $(for d in "${!FAULT_LAST_ACK[@]}"; do printf '%s=%s ' "$d" "${FAULT_LAST_ACK[$d]}"; done))"
	((FAULT_CHECKS > 0 && acked > 0)) || it_fail "no acknowledged write was proven ($FAULT_CHECKS checker runs)"
}

# fault_assert_gone FILE...: none of FILE exists.
fault_assert_gone() {
	local f
	for f; do
		[[ ! -e $f ]] || it_fail "$f exists (should have been removed)"
	done
}
