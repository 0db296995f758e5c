# shellcheck shell=bash
# integration/lib-durable.sh: is a merge that livemerge reported done still there after QEMU
# dies the next moment? Helpers for test-durable*.sh, sourced after lib.sh and lib-merge.sh.
#
# QEMU writes a merge's copied data and the qcow2 metadata that maps it (L2 and refcount
# tables) into its own caches; at finalize it rewrites a backing name in an image header on
# disk. A SIGKILL loses what is only in its caches, while the host's page cache keeps what
# QEMU did write, so a kill shows exactly what a merge left unflushed (a host crash loses more;
# these tests do not go there).
#
#   dur_start KIND NAME TOPFILE...  a paused -blockdev VM (KIND vm) or qemu-storage-daemon
#                                   (KIND qsd) named NAME on the chains; DUR_DISKS: the disks'
#                                   names (vda vdb ... / the exports exp0 exp1 ...)
#   dur_kill NAME                   SIGKILL the process started as NAME, wait until it is gone
#   dur_end NAME                    the same, or take a process that ended by itself as killed
#   dur_disk_chain DISK             DISK's chain of files in the last --json run's result line
#   dur_header_chain TOPFILE        the chain of files the image headers on disk name
#   dur_layers_read TOPFILE DEPTH   every layer's pattern reads back through TOPFILE (else: which
#                                   layer is lost, and whether it reads as zeroes)
#   dur_img_check STRICT FILE...    qemu-img check every FILE: no corruption; STRICT=1: no
#                                   leaked cluster either (a finished, flushed merge leaks none)
#   dur_run LABEL NAME CMD...       run CMD in a subshell; record its verdict under LABEL
#   dur_case KIND CASE [--delete]   one scenario of the matrix below, through dur_run
#   dur_verdict                     it_pass, or it_fail naming every failed case
#
# The matrix (dur_case CASE; layer i of each disk's chain d<N>.i holds chain_pattern i):
#   stream          stream D0                        chain d0.2                  (flatten)
#   stream-base     stream D0 --base d0.0            chain d0.2 d0.0
#   commit-mid      commit D0 --top d0.1             chain d0.2 d0.0             (intermediate)
#   commit-active   commit D0                        chain d0.1 d0.0
#   commit-2        commit D0 D1                     chains d<N>.1 d<N>.0        (active)
#   stream-2        stream D0 D1                     chains d<N>.2               (flatten)
# Each: livemerge exits 0 and its result shows the expected chains; QEMU is SIGKILLed at once;
# offline: the image headers name the expected chain, every layer's pattern reads back
# through the disk's new top (and nothing else: qemu-img compare against a raw reference),
# layers that left the chain are gone with --delete and intact without, and qemu-img check is
# clean on every image left.

DUR_SIZE=${DUR_SIZE:-64M}
DUR_DEPTH=2
DUR_DISKS=()
DUR_CASES=()
DUR_FAILED=()

# dur_start KIND NAME TOPFILE...: see the top.
dur_start() {
	local kind=$1 name=$2 i letters=abcdefghijklmnopqrstuvwxyz
	shift 2
	DUR_DISKS=()
	case $kind in
	vm)
		start_vm_blockdev "$name" "$@"
		for ((i = 0; i < $#; i++)); do DUR_DISKS+=("vd${letters:i:1}"); done
		;;
	qsd)
		start_qsd "$name" "$@"
		for ((i = 0; i < $#; i++)); do DUR_DISKS+=("exp$i"); done
		;;
	*) it_fail "dur_start: unknown kind '$kind'" ;;
	esac
	# shellcheck disable=SC2034 # read by lib-merge.sh's lm
	LM_SOCK=$T/$name.qmp
}

# dur_kill NAME: SIGKILL the process started as NAME (no chance to flush anything), wait
# until it is gone (10 s at most), forget it.
dur_kill() {
	local pid start
	[[ -f $T/$1.pid ]] || it_fail "dur_kill: $1 was not started"
	read -r pid start <"$T/$1.pid"
	it__same_process "$pid" "$start" || it_fail "dur_kill: $1 (pid $pid) is not running"
	# (no "Killed" notice from bash for a job of this shell)
	disown "$pid" 2>/dev/null || true
	kill -KILL "$pid"
	it__wait_gone "$pid" 10 || it_fail "dur_kill: $1 (pid $pid) still there 10 s after SIGKILL"
	rm -f -- "$T/$1.pid"
}

# dur_end NAME: dur_kill, except that a process that already ended by itself is taken as
# killed and logged with its last line of stderr: QEMU aborting mid-merge (QEMU 10.0.2's
# storage daemon did once, under an active commit with NBD writes) is a crash like any other
# here, and what the test checks after a crash must hold after that one too.
dur_end() {
	local pid start
	[[ -f $T/$1.pid ]] || it_fail "dur_end: $1 was not started"
	read -r pid start <"$T/$1.pid"
	if ! it__same_process "$pid" "$start"; then
		it_log "$1 (pid $pid) ended by itself before the kill: $(tail -n 1 "$T/$1.err" 2>/dev/null)"
		wait "$pid" 2>/dev/null || true
		rm -f -- "$T/$1.pid"
		return 0
	fi
	dur_kill "$1"
}

# dur_disk_chain DISK: DISK's files (active first) in the last --json run's result line, as
# a compact JSON array (empty if the result names no such disk).
dur_disk_chain() {
	lm_result_json | jq -c --arg d "$1" '.disks[] | select(.disk == $d) | [.chain[].filename]'
}

# dur_header_chain TOPFILE: the files of TOPFILE's chain as the image headers on disk name
# them (qemu-img info --backing-chain), as a compact JSON array.
dur_header_chain() {
	local out rc=0
	out=$(qemu-img info --output=json --backing-chain "$1" 2>&1) || rc=$?
	((rc == 0)) || it_fail "qemu-img info --backing-chain $1: exit $rc: $out"
	jq -c '[.[].filename]' <<<"$out"
}

# dur_img_check STRICT FILE...: see the top. qemu-img check exits 3 for leaks only.
dur_img_check() {
	local strict=$1 f out rc
	shift
	for f; do
		rc=0
		out=$(qemu-img check --output=json "$f" 2>&1) || rc=$?
		if ((rc == 3 && strict == 0)); then
			it_log "qemu-img check ${f##*/}: $(jq -r '.leaks // 0' <<<"$out" 2>/dev/null) leaked clusters (allowed here)"
			continue
		fi
		((rc == 0)) || it_fail "qemu-img check $f: exit $rc: $(qemu-img check "$f" 2>&1 | grep -v '^$' | head -n 4 | tr '\n' ' ')"
	done
}

# dur_layers_read TOPFILE DEPTH: offline, every layer's pattern of a mk_chain chain reads
# back through TOPFILE; else fail naming each layer whose data is lost, and whether it reads
# as zeroes there (the metadata that mapped it never reached the disk) or as other data.
dur_layers_read() {
	local top=$1 depth=$2 i pat out lost=()
	for ((i = 0; i <= depth; i++)); do
		pat=$(chain_pattern "$i")
		out=$(qemu-io -r -f qcow2 -c "read -P $pat $((i * IT_MIB)) $IT_MIB" "$top" 2>&1) || true
		grep -qiE 'failed|error|cannot' <<<"$out" || continue
		out=$(qemu-io -r -f qcow2 -c "read -P 0 $((i * IT_MIB)) $IT_MIB" "$top" 2>&1) || true
		if grep -qiE 'failed|error|cannot' <<<"$out"; then
			lost+=("layer $i ($pat at $i MiB) reads as other data")
		else
			lost+=("layer $i ($pat at $i MiB) reads as zeroes")
		fi
	done
	((${#lost[@]} == 0)) || it_fail "${top##*/}: $(printf '%s, ' "${lost[@]}" | sed 's/, $//')"
}

# dur__case KIND CASE DELETE: the body of dur_case, run in a subshell of its own.
dur__case() {
	local kind=$1 case=$2 delete=$3 dir name n=1 i k d top keep verb key want f
	local -a args=() tops=() gone=() kept=()
	dir=$T/img/$kind-$case${delete:+-del}
	name=$kind-$case${delete:+-del}
	mkdir -p "$dir"
	[[ $case == *-2 ]] && n=2
	for ((i = 0; i < n; i++)); do
		tops+=("$(mk_chain "$dir" "d$i" "$DUR_DEPTH" "$DUR_SIZE")")
		exp_chain "$name-d$i" "$DUR_DEPTH"
	done
	dur_start "$kind" "$name" "${tops[@]}"
	# keep: the layers (indexes, top first) of each disk's chain after the merge
	case $case in
	stream | stream-2) verb=stream keep="2" ;;
	stream-base) verb=stream keep="2 0" args=(--base "$dir/d0.0.qcow2") ;;
	commit-mid) verb=commit keep="2 0" args=(--top "$dir/d0.1.qcow2") ;;
	commit-active | commit-2) verb=commit keep="1 0" ;;
	*) it_fail "dur_case: unknown case '$case'" ;;
	esac
	lm --json "$verb" "${DUR_DISKS[@]}" "${args[@]}" ${delete:+--delete}
	# the kill comes first, before anything else could give QEMU a reason to flush
	dur_kill "$name"
	((LM_RC == 0)) || it_fail "$(lm_report)"
	for ((i = 0; i < n; i++)); do
		d=${DUR_DISKS[i]}
		want=$(for k in $keep; do echo "$dir/d$i.$k.qcow2"; done | jq -R . | jq -sc .)
		it_assert_eq "$(dur_disk_chain "$d")" "$want" "$d: the chain in livemerge's result"
		top=$(jq -r '.[0]' <<<"$want")
		it_assert_eq "$(dur_header_chain "$top")" "$want" "$d: the chain the image headers name after the kill"
		for f in "$dir/d$i".*.qcow2; do
			grep -qxF "\"$f\"" < <(jq '.[]' <<<"$want") || gone+=("$f")
		done
		dur_layers_read "$top" "$DUR_DEPTH"
		check_offline "$name-d$i" "$top" "$DUR_SIZE"
	done
	for ((i = 0; i < n; i++)); do
		for ((k = 0; k <= DUR_DEPTH; k++)); do
			f=$dir/d$i.$k.qcow2
			if [[ -e $f ]]; then
				kept+=("$f")
			elif [[ -z $delete ]]; then
				it_fail "$f is gone without --delete"
			fi
		done
	done
	if [[ -n $delete ]]; then
		assert_gone "${gone[@]}"
	else
		# a layer that left the chain is only read from: it still reads as it was
		for f in "${gone[@]}"; do
			key=${f##*/}
			verify_chain_data "$f" "${key%%.*}" "$(cut -d. -f2 <<<"$key")"
		done
	fi
	dur_img_check 1 "${kept[@]}"
}

# dur_run LABEL NAME CMD...: run CMD in a subshell of its own, so that a failure ends only
# it and dur_verdict can name each one that failed; log its verdict and time; then SIGKILL
# whatever it started under NAME ($T/NAME*.pid) and left running.
dur_run() {
	local label=$1 name=$2 reason pid rc=0 t0=$SECONDS f p start
	shift 2
	rm -f -- "$T/.fail-reason"
	# in the background, so that errexit holds inside (a subshell tested by || ignores it)
	(
		# a command of this subshell (not of its own subshells) that fails outside it_fail:
		# say which
		dur_pid=$BASHPID
		trap '[[ $BASHPID != "$dur_pid" || -s $T/.fail-reason ]] || echo "exit status $? at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND" >"$T/.fail-reason"' ERR
		"$@"
	) &
	pid=$!
	wait "$pid" || rc=$?
	DUR_CASES+=("$label")
	if ((rc != 0)); then
		reason=$(head -n 1 "$T/.fail-reason" 2>/dev/null || true)
		DUR_FAILED+=("$label: ${reason:-exit status $rc}")
		it_log "CASE FAIL $label ($((SECONDS - t0)) s): ${reason:-exit status $rc}"
	else
		it_log "CASE ok   $label ($((SECONDS - t0)) s)"
	fi
	rm -f -- "$T/.fail-reason"
	for f in "$T/$name".pid "$T/$name"-*.pid; do
		[[ -f $f ]] || continue
		read -r p start <"$f"
		! it__same_process "$p" "$start" || kill -KILL "$p" 2>/dev/null || true
		rm -f -- "$f"
	done
}

# dur_case KIND CASE [--delete]: one case of the matrix (see the top) through dur_run.
dur_case() {
	local delete=${3:+1}
	dur_run "$1 $2${delete:+ --delete}" "$1-$2${delete:+-del}" dur__case "$1" "$2" "$delete"
}

# dur_matrix KIND: every case, without and with --delete.
dur_matrix() {
	local c
	for c in stream stream-base commit-mid commit-active commit-2 stream-2; do
		dur_case "$1" "$c"
		dur_case "$1" "$c" --delete
	done
}

# dur_verdict: PASS if every case passed, else FAIL naming each failed case and why.
dur_verdict() {
	local f
	if ((${#DUR_FAILED[@]} == 0)); then
		it_log "all ${#DUR_CASES[@]} cases passed"
		it_pass
	fi
	for f in "${DUR_FAILED[@]}"; do
		it_log "failed: $f"
	done
	it_fail "${#DUR_FAILED[@]} of ${#DUR_CASES[@]} cases: $(printf '%s | ' "${DUR_FAILED[@]}" | sed 's/ | $//')"
}
