# shellcheck shell=bash
# integration/lib-merge.sh: helpers for the merge-engine tests (test-merge-*.sh), sourced
# after lib.sh. Uses only lib.sh's public functions and variables (it_*, mk_chain,
# chain_pattern, qemu_io_check, hmp_write, nbd_write, stop_vm, start_*, $T, $LM, $IT_NBD).
#
# lm_setup           it_setup + journals in $T/state + images in $T/img
# lm / lm_expect     run build/livemerge against $LM_SOCK, keep stdout/stderr/exit status
# exp_*              the data each disk must hold (layer patterns + live writes), by a KEY
# live_*             write and read back live through the VM's device or the qsd NBD export
# check_offline      after the process stopped: read -P every expected range, and
#                    qemu-img compare against a raw reference built from the same list
# state_of           QEMU's own view of every disk's chain (query-block, exports, nodes), to
#                    compare before/after an operation that must change nothing

# ---------------------------------------------------------------- setup

# lm_setup: it_setup, require livemerge, keep livemerge's journals inside $T (so nothing is
# left in ~/.local/state), make $T/img.
lm_setup() {
	it_setup
	it_require_lm
	mkdir -p "$T/img" "$T/state"
	XDG_STATE_HOME=$T/state
	export XDG_STATE_HOME
}

# lm_on_exit CMD: lib.sh's it_on_exit (run CMD when the test ends, before $T is removed).
lm_on_exit() {
	it_on_exit "$1"
}

# ---------------------------------------------------------------- running livemerge

# lm ARGS...: run livemerge -c $LM_SOCK ARGS (LM_TIMEOUT s at most, default 60). Stdout in
# $T/lm.out, stderr in $T/lm.err, exit status in LM_RC, the command line in LM_CMD.
lm() {
	LM_RC=0
	LM_CMD="livemerge -c $LM_SOCK $*"
	it_log "\$ $LM_CMD"
	timeout -k 5 "${LM_TIMEOUT:-60}" "$LM" -c "$LM_SOCK" "$@" >"$T/lm.out" 2>"$T/lm.err" </dev/null || LM_RC=$?
	[[ ! -s $T/lm.err ]] || sed 's/^/    stderr: /' "$T/lm.err" >&2
}

# lm_report: the last livemerge run, for a failure message.
lm_report() {
	local out err
	out=$(tail -n 3 "$T/lm.out" | cut -c 1-400)
	err=$(head -n 4 "$T/lm.err")
	echo "[$LM_CMD] exit $LM_RC; stderr: ${err:-<empty>}; stdout tail: ${out:-<empty>}"
}

# lm_expect RC ARGS...: run livemerge; fail unless it exits RC.
lm_expect() {
	local want=$1
	shift
	lm "$@"
	((LM_RC == want)) || it_fail "expected exit $want: $(lm_report)"
}

# lm_ok ARGS...: lm_expect 0.
lm_ok() {
	lm_expect 0 "$@"
}

# lm_one_line_error WHAT: stderr of the last run is exactly one line, "livemerge: ...", and
# (if given) it contains WHAT.
lm_one_line_error() {
	local n
	n=$(grep -c . "$T/lm.err" || true)
	((n == 1)) || it_fail "expected a one-line error on stderr, got $n lines: $(lm_report)"
	grep -q '^livemerge: ' "$T/lm.err" || it_fail "error line does not start with 'livemerge: ': $(lm_report)"
	[[ -z ${1:-} ]] || grep -qF -- "$1" "$T/lm.err" || it_fail "error does not mention '$1': $(lm_report)"
}

# lm_result_json: the {"type":"result"} line of the last --json run (fails if there is none,
# or more than one, or a line is not JSON).
lm_result_json() {
	local n
	jq -e . "$T/lm.out" >/dev/null 2>&1 || it_fail "stdout is not JSON lines: $(lm_report)"
	n=$(jq -c 'select(.type == "result")' "$T/lm.out" | grep -c . || true)
	((n == 1)) || it_fail "expected one result line, got $n: $(lm_report)"
	jq -c 'select(.type == "result")' "$T/lm.out"
}

# lm_chain DISK: the files of DISK's chain (active first) as livemerge --json chain shows it,
# as a compact JSON array.
lm_chain() {
	local out rc=0
	out=$(timeout 30 "$LM" -c "$LM_SOCK" --json chain "$1" 2>"$T/chain.err" </dev/null) || rc=$?
	((rc == 0)) || it_fail "livemerge -c $LM_SOCK --json chain $1: exit $rc: $(head -n 2 "$T/chain.err")"
	jq -c '[.chain[].filename]' <<<"$out"
}

# lm_node DISK INDEX: node name of layer INDEX (0 = active) of DISK's chain.
lm_node() {
	local out rc=0
	out=$(timeout 30 "$LM" -c "$LM_SOCK" --json chain "$1" 2>"$T/chain.err" </dev/null) || rc=$?
	((rc == 0)) || it_fail "livemerge -c $LM_SOCK --json chain $1: exit $rc: $(head -n 2 "$T/chain.err")"
	jq -r --argjson i "$2" '.chain[$i]."node-name"' <<<"$out"
}

# files_json FILE...: the arguments as a compact JSON array.
files_json() {
	printf '%s\n' "$@" | jq -R . | jq -sc .
}

# assert_chain DISK FILE...: livemerge's view of DISK's chain is exactly FILE... (active
# first), and so is QEMU's own view (qmp_chain_of).
assert_chain() {
	local disk=$1 want got
	shift
	want=$(files_json "$@")
	got=$(lm_chain "$disk")
	it_assert_eq "$got" "$want" "chain of $disk (livemerge chain)"
	got=$(qmp_chain_of "$LM_SOCK" "$disk")
	it_assert_eq "$got" "$want" "chain of $disk (QEMU's query-block / named nodes)"
}

# ---------------------------------------------------------------- QEMU's own view

# qmpq SOCK JSON...: a lean QMP client (one socat, no jq per message): negotiate, send every
# command at once (ids lmq-1...), print each reply on one line, in order, as QEMU sent it
# (with its id); events are skipped. Fails the test on a missing greeting, an error reply,
# or no reply within IT_QMP_TIMEOUT s (default 30). Not for "quit".
qmpq() {
	local sock=${1#unix:} to=${IT_QMP_TIMEOUT:-30} line rfd wfd pid c0 c1 i=0 got=0 cmd
	local -a replies=()
	shift
	coproc LMQ { exec socat - "UNIX-CONNECT:$sock" 2>/dev/null; }
	pid=$LMQ_PID
	c0=${LMQ[0]}
	c1=${LMQ[1]}
	exec {rfd}<&"$c0" {wfd}>&"$c1"
	exec {c0}<&- {c1}>&-
	if ! read -r -t "$to" -u "$rfd" line || [[ $line != *'"QMP"'* ]]; then
		exec {wfd}>&- {rfd}<&-
		it_fail "qmpq: no QMP greeting on $sock"
	fi
	{
		echo '{"execute":"qmp_capabilities","id":"lmq-0"}'
		for cmd; do
			i=$((i + 1))
			[[ $cmd == *'}' ]] || it_fail "qmpq: not a JSON object: $cmd"
			echo "${cmd%\}},\"id\":\"lmq-$i\"}"
		done
	} >&"$wfd"
	while ((got <= i)); do
		if ! read -r -t "$to" -u "$rfd" line; then
			exec {wfd}>&- {rfd}<&-
			it_fail "qmpq: no reply to command $got of [$*] on $sock within $to s"
		fi
		if [[ $line == *"\"id\": \"lmq-$got\""* || $line == *"\"id\":\"lmq-$got\""* ]]; then
			[[ $line != *'"error"'* || $line == *'"return"'* ]] ||
				{ exec {wfd}>&- {rfd}<&-; it_fail "qmpq: error reply on $sock: $line"; }
			((got == 0)) || replies+=("$line")
			got=$((got + 1))
		fi
	done
	exec {wfd}>&- {rfd}<&-
	wait "$pid" 2>/dev/null || true
	printf '%s\n' "${replies[@]}"
}

# qmp_chain_of SOCK DISK: DISK's chain of files from QEMU directly (not through livemerge):
# DISK is a qdev id (query-block's qdev), a block backend name, or a qsd export's node or id.
qmp_chain_of() {
	local sock=${1#unix:} disk=$2 blocks exports nodes out
	blocks=$(qmpq "$sock" '{"execute":"query-block"}')
	out=$(jq -c --arg d "$disk" '[.return[] | select(.inserted != null and
		(.qdev == "/machine/peripheral/\($d)/virtio-backend" or .device == $d or .qdev == $d))
		| [.inserted.image | recurse(.["backing-image"]; . != null) | .filename]] | first // empty' <<<"$blocks")
	if [[ -z $out ]]; then
		exports=$(qmpq "$sock" '{"execute":"query-block-exports"}')
		nodes=$(qmpq "$sock" '{"execute":"query-named-block-nodes"}')
		out=$(jq -c --arg d "$disk" --argjson ex "$exports" '
			($ex.return | map(select(.id == $d or ."node-name" == $d)) | first | ."node-name") as $n
			| [.return[] | select($n != null and ."node-name" == $n)
			   | [.image | recurse(.["backing-image"]; . != null) | .filename]] | first // empty' <<<"$nodes")
		# a qsd disk named by its top node, without an export on it
		[[ -n $out ]] || out=$(jq -c --arg d "$disk" '[.return[] | select(."node-name" == $d)
			| [.image | recurse(.["backing-image"]; . != null) | .filename]] | first // empty' <<<"$nodes")
	fi
	[[ -n $out ]] || it_fail "qmp_chain_of: QEMU has no disk '$disk' on $sock"
	echo "$out"
}

# state_of SOCK: QEMU's block state as one compact JSON value: every device's chain
# (files, active first), every export's node, every block node (name, file, driver, backing
# file), and every job (id, type, status). Two calls compare equal iff nothing changed.
# (Not the nodes' "ro": a cancelled active commit leaves the layers below its base
# read-write in QEMU 7.2 itself.)
state_of() {
	local sock=${1#unix:} r
	r=$(qmpq "$sock" '{"execute":"query-block"}' '{"execute":"query-block-exports"}' \
		'{"execute":"query-named-block-nodes","arguments":{"flat":true}}' '{"execute":"query-jobs"}')
	jq -sc '{
		devices: ([.[0].return[] | select(.inserted != null) | {qdev, device, node: .inserted."node-name",
			chain: [.inserted.image | recurse(.["backing-image"]; . != null) | .filename]}] | sort),
		exports: ([.[1].return[] | {id, node: ."node-name"}] | sort),
		nodes: ([.[2].return[] | {node: ."node-name", file, drv, backing: .backing_file}] | sort),
		jobs: [.[3].return[] | {id, type, status}] }' <<<"$r"
}

# assert_state_unchanged SOCK BEFORE WHAT: state_of SOCK equals BEFORE.
assert_state_unchanged() {
	local now
	now=$(state_of "$1")
	if [[ $now != "$2" ]]; then
		it_log "state before: $2"
		it_log "state after:  $now"
		it_fail "$3: QEMU's block state changed: $(diff <(jq . <<<"$2") <(jq . <<<"$now") | grep '^[<>]' | head -n 6 | tr '\n' ' ')"
	fi
}

# assert_no_jobs SOCK WHAT: query-jobs is empty.
assert_no_jobs() {
	local j
	j=$(qmpq "$1" '{"execute":"query-jobs"}' | jq -c .return)
	it_assert_eq "$j" "[]" "$2: jobs left in query-jobs"
}

# job_status SOCK JOB: JOB's status in query-jobs ("" if there is no such job).
job_status() {
	qmpq "$1" '{"execute":"query-jobs"}' | jq -r --arg j "$2" '.return[] | select(.id == $j) | .status'
}

# wait_job_status SOCK JOB STATUS SECONDS: poll until JOB has STATUS.
wait_job_status() {
	local sock=$1 job=$2 want=$3 n=$(($4 * 5)) st=
	while ((n-- > 0)); do
		st=$(job_status "$sock" "$job")
		[[ $st == "$want" ]] && return 0
		sleep 0.2
	done
	it_fail "job $job did not reach '$want' within $4 s (last status '${st:-none}')"
}

# ---------------------------------------------------------------- processes

# start_vm_2mon NAME TOPFILE...: as lib.sh's start_vm_blockdev (qdev vda, vdb, ...; nodes
# vdX-top over vdX-file), with a second QMP monitor $T/NAME.qmp2 for actions from outside
# while livemerge holds the first one.
start_vm_2mon() {
	local name=$1 i=0 top id letters=abcdefghijklmnopqrstuvwxyz pid n=200 s
	local -a args=()
	shift
	for top; do
		[[ -f $top ]] || it_fail "no such image: $top"
		id=vd${letters:i:1}
		args+=(-blockdev "driver=file,filename=${top//,/,,},node-name=$id-file"
			-blockdev "driver=qcow2,file=$id-file,node-name=$id-top"
			-device "virtio-blk-pci,drive=$id-top,id=$id")
		i=$((i + 1))
	done
	[[ ! -e $T/$name.pid ]] || it_fail "a process named $name was already started"
	qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none \
		-qmp "unix:$T/$name.qmp,server=on,wait=off" -qmp "unix:$T/$name.qmp2,server=on,wait=off" \
		"${args[@]}" >"$T/$name.out" 2>"$T/$name.err" </dev/null &
	pid=$!
	it_track "$name" "$pid"
	for s in "$T/$name.qmp" "$T/$name.qmp2"; do
		while :; do
			((n-- > 0)) || it_fail "$name: no QMP greeting on $s within 10 s"
			kill -0 "$pid" 2>/dev/null || it_fail "$name exited during start-up: $(head -n 1 "$T/$name.err")"
			if [[ -S $s ]] && timeout 2 socat -T 2 - "UNIX-CONNECT:$s" </dev/null 2>/dev/null | grep -q '"QMP"'; then
				break
			fi
			sleep 0.05
		done
	done
}

# proc_pid NAME: the pid of the process started as NAME.
proc_pid() {
	local pid
	read -r pid _ <"$T/$1.pid"
	echo "$pid"
}

# ---------------------------------------------------------------- expected data

# The data each disk must hold, by KEY: lines "PATTERN OFFSET LENGTH" (bytes), in write
# order, non-overlapping (so each can be read back with read -P).
declare -gA EXP=()

# exp_chain KEY DEPTH: the layer patterns mk_chain wrote (layer i: 0x10+i at i MiB, 1 MiB).
exp_chain() {
	local i
	for ((i = 0; i <= $2; i++)); do
		exp_add "$1" "$(chain_pattern "$i")" $((i * IT_MIB)) "$IT_MIB"
	done
}

# exp_add KEY PATTERN OFF LEN: record a write (OFF, LEN in bytes or with a k/M suffix).
exp_add() {
	local off len
	off=$(numfmt --from=iec "${3^^}")
	len=$(numfmt --from=iec "${4^^}")
	EXP[$1]+="$2 $off $len"$'\n'
}

# exp_reads KEY: one "read -P PAT OFF LEN" per recorded write.
exp_reads() {
	local pat off len
	while read -r pat off len; do
		[[ -n $pat ]] && echo "read -P $pat $off $len"
	done <<<"${EXP[$1]}"
}

# exp_copy FROM TO: TO's expected data is FROM's (e.g. the old top keeps what it had).
exp_copy() {
	EXP[$2]=${EXP[$1]}
}

# ref_image KEY SIZE: a raw image $T/ref-KEY.raw with KEY's writes, made independently of
# QEMU's block layer for qcow2 (plain qemu-io on a raw file); prints its path.
ref_image() {
	local key=$1 ref=$T/ref-$1.raw pat off len out
	local -a cmds=()
	rm -f "$ref"
	qemu-img create -q -f raw "$ref" "$2" >&2
	while read -r pat off len; do
		[[ -n $pat ]] && cmds+=(-c "write -P $pat $off $len")
	done <<<"${EXP[$key]}"
	if ((${#cmds[@]})); then
		out=$(qemu-io -f raw "${cmds[@]}" "$ref" 2>&1) || it_fail "ref_image $key: $out"
		! grep -qiE 'failed|error' <<<"$out" || it_fail "ref_image $key: $out"
	fi
	echo "$ref"
}

# check_offline KEY FILE SIZE: with no process holding FILE: every expected range of KEY reads
# back through FILE (read -P), and FILE (with its backing chain) is identical to the raw
# reference image made from the same writes (qemu-img compare).
check_offline() {
	local key=$1 file=$2 size=$3 ref out rc=0
	local -a cmds=()
	mapfile -t cmds < <(exp_reads "$key")
	qemu_io_check -r "$file" "${cmds[@]}"
	ref=$(ref_image "$key" "$size")
	out=$(qemu-img compare -f qcow2 -F raw "$file" "$ref" 2>&1) || rc=$?
	((rc == 0)) || it_fail "qemu-img compare -f qcow2 -F raw $file $ref (data of $key): exit $rc: $out"
	rm -f "$ref"
}

# ---------------------------------------------------------------- live data

# live_write VM QDEV KEY PATTERN OFF LEN: write through the running VM's device (HMP qemu-io
# on its own backend) and record it for KEY.
live_write() {
	hmp_write "$T/$1.qmp" "$2" "$4" "$5" "$6"
	exp_add "$3" "$4" "$5" "$6"
}

# live_flush VM QDEV: flush the device's backend (HMP qemu-io "flush").
live_flush() {
	local req
	req=$(jq -nc --arg c "qemu-io -d /machine/peripheral/$2/virtio-backend \"flush\"" \
		'{execute: "human-monitor-command", arguments: {"command-line": $c}}')
	qmpq "$T/$1.qmp" "$req" >/dev/null
}

# hmp_reads VM QDEV CMD [QDEV CMD...]: run qemu-io read commands through the devices' backends
# (one monitor connection for all); fail on a "Pattern verification failed", a failed read,
# or a missing success report in QEMU's stdout.
hmp_reads() {
	local vm=$1 out=$T/$1.out before reply n=200 new count=0 ok
	local -a reqs=()
	shift
	while (($# >= 2)); do
		reqs+=("$(jq -nc --arg c "qemu-io -d /machine/peripheral/$1/virtio-backend \"$2\"" \
			'{execute: "human-monitor-command", arguments: {"command-line": $c}}')")
		count=$((count + 1))
		shift 2
	done
	((count > 0)) || return 0
	before=$(stat -c %s "$out")
	reply=$(qmpq "$T/$vm.qmp" "${reqs[@]}")
	[[ $(jq -sc 'map(.return) | unique' <<<"$reply") == '[""]' ]] || it_fail "hmp_reads $vm: HMP said: $reply"
	while ((n-- > 0)); do
		new=$(tail -c +$((before + 1)) "$out")
		(($(grep -cE '^(read [0-9]|read failed)' <<<"$new") >= count)) && break
		sleep 0.05
	done
	ok=$(grep -cE '^read [0-9]+/[0-9]+ bytes at offset [0-9]+$' <<<"$new" || true)
	if grep -qiE 'verification failed|failed|error' <<<"$new" || ((ok != count)); then
		it_fail "live read on $vm: $ok of $count reads verified: $(grep -iE 'verification failed|failed|error' <<<"$new" | head -n 1)"
	fi
}

# live_check VM QDEV:KEY...: every expected range of each KEY reads back live through its
# device QDEV; QEMU's stdout holds no pattern verification failure (beyond LM_PVF_EXPECTED,
# the number a test provoked on purpose).
live_check() {
	local vm=$1 pair c
	local -a args=()
	shift
	for pair; do
		while IFS= read -r c; do
			[[ -n $c ]] && args+=("${pair%%:*}" "$c")
		done < <(exp_reads "${pair#*:}")
	done
	hmp_reads "$vm" "${args[@]}"
	(($(grep -c 'Pattern verification failed' "$T/$vm.out" || true) <= ${LM_PVF_EXPECTED:-0})) ||
		it_fail "$vm: QEMU's stdout has a pattern verification failure"
}

# live_write_nbd KEY EXPORT PATTERN OFF LEN: write through the qsd NBD export ($IT_NBD).
live_write_nbd() {
	nbd_write "$IT_NBD" "$2" "$3" "$4" "$5"
	exp_add "$1" "$3" "$4" "$5"
}

# live_check_nbd KEY EXPORT: every expected range of KEY reads back through the NBD export.
live_check_nbd() {
	local out
	local -a cmds=() args=()
	mapfile -t cmds < <(exp_reads "$1")
	for c in "${cmds[@]}"; do args+=(-c "$c"); done
	out=$(qemu-io -r -f raw "${args[@]}" "nbd+unix:///$2?socket=$IT_NBD" 2>&1) || true
	if grep -qiE 'failed|error|cannot' <<<"$out" || (($(grep -cE '^read [0-9]+/[0-9]+ bytes' <<<"$out") != ${#cmds[@]})); then
		it_fail "live read through NBD export $2: $(grep -iE 'failed|error|cannot' <<<"$out" | head -n 1)${out:+ ($(wc -l <<<"$out") lines)}"
	fi
}

# ---------------------------------------------------------------- files

# file_sum FILE: size and sha256 of FILE (to check a file was left untouched).
file_sum() {
	echo "$(stat -c %s "$1") $(sha256sum <"$1" | cut -d' ' -f1)"
}

# assert_gone FILE...: none of FILE exists.
assert_gone() {
	local f
	for f; do
		[[ ! -e $f ]] || it_fail "$f exists (should have been removed / never created)"
	done
}

# assert_exist FILE...: every FILE exists.
assert_exist() {
	local f
	for f; do
		[[ -e $f ]] || it_fail "$f is missing"
	done
}

# check_alone KEY FILE SIZE: offline, FILE alone (its backing chain cut off: unallocated
# areas read as zeroes) is identical to the raw reference of KEY; for an overlay, KEY holds
# just the writes made after its snapshot.
check_alone() {
	local key=$1 file=$2 size=$3 ref out rc=0
	ref=$(ref_image "$key" "$size")
	out=$(qemu-img compare "json:$(jq -nc --arg f "$file" '{driver: "qcow2", file: {driver: "file", filename: $f}, backing: null}')" \
		"json:$(jq -nc --arg f "$ref" '{driver: "raw", file: {driver: "file", filename: $f}}')" 2>&1) || rc=$?
	((rc == 0)) || it_fail "$file alone (no backing) differs from the writes made into it ($key): exit $rc: $out"
	rm -f "$ref"
}

# pre_copy VM QDEV KEY FILE: before a snapshot: flush the device, keep a raw copy of FILE (with
# its backing chain) as $T/pre-BASENAME.raw, and record KEY's data as old-BASENAME (what
# FILE must still hold at the end).
pre_copy() {
	local base
	base=$(basename "$4")
	live_flush "$1" "$2"
	qemu-img convert -U -f qcow2 -O raw "$4" "$T/pre-$base.raw"
	exp_copy "$3" "old-$base"
}

# check_old_top FILE SIZE: offline: FILE (with its backing chain) is identical to its
# pre-snapshot copy and to the reference of what it held then.
check_old_top() {
	local base out rc=0
	base=$(basename "$1")
	out=$(qemu-img compare -f qcow2 -F raw "$1" "$T/pre-$base.raw" 2>&1) || rc=$?
	((rc == 0)) || it_fail "old top $1 changed after its snapshot: qemu-img compare with its pre-snapshot copy: exit $rc: $out"
	check_offline "old-$base" "$1" "$2"
}
