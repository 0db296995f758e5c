# shellcheck shell=bash
# integration/lib.sh: helpers shared by the integration tests (integration/test-*.sh).
#
# A test sources this file, calls it_setup, builds images with mk_chain, starts QEMU
# (start_vm_blockdev / start_vm_drive) or qemu-storage-daemon (start_qsd), drives
# build/livemerge ($LM) against the QMP socket, cross-checks with qmp_raw and qemu-img, and
# ends with it_pass. Any failure ends the test with one "FAIL name: reason" line on stdout;
# diagnostics go to stderr. The cleanup trap kills what the test started and removes $T
# (set IT_KEEP=1 to keep $T for a post-mortem).
#
# Functions that start processes (start_*) or set variables must run in the test's own shell,
# not inside $(...): the trap needs to see the processes, and the caller needs the variables.
#
# Data layout written by mk_chain (what verify_chain_data checks):
#   layer i of a chain (i = 0 is the base, i = DEPTH the top) holds pattern byte 0x10+i
#   (chain_pattern I) at offset i MiB, length 1 MiB. Nothing else is written, so every
#   layer's pattern is visible through the top, and the rest of the disk reads as zeroes.
#
# Names given to the disks of each layout (N = 0, 1, ... in TOPFILE order):
#   start_vm_blockdev  qdev id vda, vdb, ...; qcow2 node vdX-top over file node vdX-file;
#                      the block backend is anonymous (query-block "device" is "").
#   start_vm_drive     qdev id virtio-diskN; block backend drive-virtio-diskN; node names
#                      chosen by QEMU (#blockNNN).
#   start_qsd          qcow2 node diskN over file node diskN-file; NBD export expN named diskN.
#   Backing layers are always opened by QEMU from the image headers (automatic node names).
# Files in $T for a process started as NAME: NAME.qmp (monitor), NAME.out / NAME.err (its
# stdout / stderr), NAME.pid, and for qsd NAME.nbd (NBD server socket).

set -E
shopt -s inherit_errexit

IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IT_ROOT=$(dirname "$IT_DIR")
LM=${LM:-build/livemerge}
[[ $LM == /* ]] || LM=$IT_ROOT/$LM
IT_NAME=$(basename "$0" .sh)
IT_NAME=${IT_NAME#test-}
IT_MIB=1048576
IT_VERDICT=
IT_ERR=
IT_SIGNAL=
IT_UNDO=()
T=

# ---------------------------------------------------------------- internal helpers

it__cleanup() {
	local rc=$? f pid start reason c
	set +e
	trap - ERR
	if [[ -n $T && -d $T ]]; then
		# TERM everything this test started, give it 5 s, then KILL what is left.
		for f in "$T"/*.pid; do
			[[ -f $f ]] || continue
			read -r pid start <"$f"
			it__same_process "$pid" "$start" && kill -TERM "$pid" 2>/dev/null
		done
		for f in "$T"/*.pid; do
			[[ -f $f ]] || continue
			read -r pid start <"$f"
			it__wait_gone "$pid" 5 || { it__same_process "$pid" "$start" && kill -KILL "$pid" 2>/dev/null; }
		done
	fi
	# the test's own undo actions (umount, chattr -i ...): after its processes are gone,
	# before $T is removed
	for c in "${IT_UNDO[@]}"; do
		eval "$c" >/dev/null 2>&1
	done
	IT_UNDO=()
	if [[ -z $IT_VERDICT ]]; then
		reason=
		[[ -n $T && -s $T/.fail-reason ]] && reason=$(head -n 1 "$T/.fail-reason")
		if ((rc == 0)); then
			reason=${reason:-ended without it_pass}
		else
			reason=${reason:-${IT_SIGNAL:+killed by SIG$IT_SIGNAL, }exit status $rc${IT_ERR:+ at $IT_ERR}}
		fi
		echo "FAIL $IT_NAME: $reason"
		((rc != 0)) || rc=1
	fi
	if [[ -n $T && -d $T ]]; then
		if [[ ${IT_KEEP:-0} == 1 ]]; then
			echo "kept $T" >&2
		else
			rm -rf -- "$T"
		fi
	fi
	exit "$rc"
}

# it__proc_state PID: print "STATE STARTTIME" of PID from /proc (STATE Z: a zombie; STARTTIME
# in clock ticks since boot, which tells a reused pid apart); false if there is no PID.
it__proc_state() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	# shellcheck disable=SC2086 # the fields after "(comm) ", which may hold spaces
	set -- ${stat##*) }
	echo "$1 ${20}"
}

# it__alive PID: true if PID exists and is not a zombie.
it__alive() {
	local state
	state=$(it__proc_state "$1") && [[ $state != Z\ * ]]
}

# it__same_process PID START: true if PID is alive and is the process started at START, so
# a reused pid is never killed.
it__same_process() {
	local state
	state=$(it__proc_state "$1") && [[ $state != Z\ * && $state == *" $2" ]]
}

# it__wait_gone PID SECONDS: wait up to SECONDS for PID to exit; false on timeout.
it__wait_gone() {
	local pid=$1 n=$(($2 * 20))
	while ((n-- > 0)); do
		it__alive "$pid" || return 0
		sleep 0.05
	done
	! it__alive "$pid"
}

# it__bytes SIZE: SIZE (decimal, optional k/M/G/T suffix as qemu-io takes it) in bytes.
it__bytes() {
	local n=${1%[kKmMgGtT]} mult=1
	[[ $n =~ ^[0-9]+$ && ${#1} -le $((${#n} + 1)) ]] || it_fail "bad size '$1'"
	case $1 in
	*[kK]) mult=1024 ;;
	*[mM]) mult=$IT_MIB ;;
	*[gG]) mult=$((IT_MIB * 1024)) ;;
	*[tT]) mult=$((IT_MIB * IT_MIB)) ;;
	esac
	echo $((n * mult))
}

# it__io_expect CMD...: the report lines qemu-io prints when each read/write CMD succeeds
# ("read LEN/LEN bytes at offset OFF", "wrote ..."), one per line.
it__io_expect() {
	local cmd verb off len
	local -a w
	for cmd; do
		read -r -a w <<<"$cmd"
		case ${w[0]} in
		read) verb="read" ;;
		write) verb="wrote" ;;
		*) it_fail "it__io_expect: only read/write commands are checked, got '$cmd'" ;;
		esac
		((${#w[@]} >= 3)) || it_fail "it__io_expect: '$cmd' lacks OFF LEN"
		off=$(it__bytes "${w[${#w[@]} - 2]}")
		len=$(it__bytes "${w[${#w[@]} - 1]}")
		echo "$verb $len/$len bytes at offset $off"
	done
}

# it__io_check WHAT OUTPUT CMD...: OUTPUT (qemu-io's report) must hold exactly the success
# lines of CMD... in order, and no pattern mismatch or failure message.
it__io_check() {
	local what=$1 output=$2 want got bad='failed|error|cannot|can.t'
	shift 2
	want=$(it__io_expect "$@")
	got=$(grep -E '^(read|wrote) [0-9]+/[0-9]+ bytes at offset [0-9]+$' <<<"$output" || true)
	if grep -qiE "$bad" <<<"$output" || [[ $got != "$want" ]]; then
		printf '%s: qemu-io output:\n%s\n' "$what" "$output" >&2
		it_fail "$what: $(grep -iE "$bad" <<<"$output" | head -n 1 || echo "expected '${want//$'\n'/; }'")"
	fi
}

# it__wait_qmp NAME PID SOCK: wait (10 s at most) until SOCK sends a QMP greeting.
it__wait_qmp() {
	local name=$1 pid=$2 sock=$3 n=200
	while ((n-- > 0)); do
		if ! it__alive "$pid"; then
			cat "$T/$name.err" >&2
			it_fail "$name exited during start-up: $(head -n 1 "$T/$name.err")"
		fi
		if [[ -S $sock ]] && timeout 2 socat -T 2 - "UNIX-CONNECT:$sock" </dev/null 2>/dev/null | grep -q '"QMP"'; then
			return 0
		fi
		sleep 0.05
	done
	it_fail "$name: no QMP greeting on $sock within 10 s"
}

# it__launch NAME SOCK CMD...: run CMD in the background with stdout/stderr in $T/NAME.out
# and $T/NAME.err, record it for cleanup, wait for its monitor, export IT_SOCK.
it__launch() {
	local name=$1 sock=$2 pid
	shift 2
	[[ -n $T ]] || it_fail "call it_setup first"
	((${#sock} < 108)) || it_fail "socket path too long (${#sock} bytes): $sock"
	[[ ! -e $T/$name.pid ]] || it_fail "a process named $name was already started"
	"$@" >"$T/$name.out" 2>"$T/$name.err" </dev/null &
	pid=$!
	it_track "$name" "$pid"
	it__wait_qmp "$name" "$pid" "$sock"
	IT_SOCK=$sock
	export IT_SOCK
}

# it__optpath FILE: FILE as an absolute path (not resolving symlinks), commas doubled for a
# QEMU option value.
it__optpath() {
	local f=$1
	[[ $f == /* ]] || f=$PWD/$f
	[[ -f $f || -b $f ]] || it_fail "no such image: $f"
	echo "${f//,/,,}"
}

# ---------------------------------------------------------------- test verdicts

# it_setup: make $T (private temp dir, short path for unix sockets) and install the traps.
it_setup() {
	T=$(mktemp -d "${TMPDIR:-/tmp}/lm.XXXXXX")
	export T
	trap it__cleanup EXIT
	trap 'IT_SIGNAL=HUP; exit 129' HUP
	trap 'IT_SIGNAL=INT; exit 130' INT
	trap 'IT_SIGNAL=TERM; exit 143' TERM
	trap '[[ -n $IT_ERR ]] || IT_ERR="${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
}

# it_log MSG...: a diagnostic line on stderr.
it_log() {
	echo "[$IT_NAME] $*" >&2
}

# it_fail MSG: end the test with "FAIL name: MSG". Inside $(...) the reason is handed to the
# test's shell through $T/.fail-reason, and the subshell exits non-zero.
it_fail() {
	local msg=$*
	msg=${msg//$'\n'/\\n}
	if [[ $BASHPID != "$$" ]]; then
		[[ -z $T || -s $T/.fail-reason ]] || echo "$msg" >"$T/.fail-reason"
		it_log "failing in a subshell: $msg"
		exit 1
	fi
	IT_VERDICT=fail
	echo "FAIL $IT_NAME: $msg"
	exit 1
}

# it_assert_eq ACTUAL EXPECTED MSG: fail with MSG and both values unless they are equal.
it_assert_eq() {
	[[ $1 == "$2" ]] || it_fail "$3: expected '$2', got '$1'"
}

# it_on_exit CMD: run CMD (a string, eval'ed, errors ignored) when the test ends, after the
# processes it started are stopped and before $T is removed (umount, chattr -i ...).
it_on_exit() {
	IT_UNDO+=("$1")
}

# it_skip_case WHAT REASON: case WHAT of the test cannot run on this machine (REASON): one
# line "SKIP name: WHAT: REASON" on stdout, which integration/run shows and counts as skipped
# (never as passed). Only for what the machine lacks; anything else is a failure.
it_skip_case() {
	[[ $BASHPID == "$$" ]] || it_fail "it_skip_case called in a subshell"
	echo "SKIP $IT_NAME: $1: $2"
	it_log "case $1 skipped: $2"
}

# it_pass: end the test with "PASS name".
it_pass() {
	[[ $BASHPID == "$$" ]] || it_fail "it_pass called in a subshell"
	IT_VERDICT=pass
	echo "PASS $IT_NAME"
	exit 0
}

# it_track NAME PID: have the cleanup trap kill PID (recorded with its start time in
# $T/NAME.pid). The start_* functions call it; a test calls it for its own background jobs.
it_track() {
	local start
	start=$(it__proc_state "$2") || it_fail "process $2 ($1) is already gone"
	start=${start#* }
	echo "$2 $start" >"$T/$1.pid"
}

# it_require_lm: fail unless $LM (build/livemerge) exists and is executable.
it_require_lm() {
	[[ -x $LM ]] || it_fail "$LM is missing or not executable (run make)"
}

# ---------------------------------------------------------------- images

# chain_pattern I: the pattern byte of layer I, as 0xNN.
chain_pattern() {
	printf '0x%02x\n' $((0x10 + $1))
}

# chain_files TOPFILE: the files of a chain made by mk_chain, top first, one per line.
chain_files() {
	local top=$1 dir base name depth i
	dir=$(dirname "$top")
	base=$(basename "$top" .qcow2)
	depth=${base##*.}
	name=${base%.*}
	[[ $depth =~ ^[0-9]+$ && -n $name ]] || it_fail "chain_files: $top is not NAME.DEPTH.qcow2"
	for ((i = depth; i >= 0; i--)); do
		echo "$dir/$name.$i.qcow2"
	done
}

# mk_chain DIR NAME DEPTH SIZE: create DIR/NAME.0.qcow2 (base, SIZE bytes) and overlays
# DIR/NAME.1.qcow2 ... DIR/NAME.DEPTH.qcow2 (absolute backing paths, -F qcow2), write layer
# i's pattern (see the top of this file) into each, print the top's absolute path.
mk_chain() {
	local dir=$1 name=$2 depth=$3 size=$4 i file prev="" out cmd
	if ! [[ $depth =~ ^[0-9]+$ ]] || ((depth > 200)); then
		it_fail "mk_chain: bad depth '$depth'"
	fi
	dir=$(cd "$dir" && pwd)
	(($(it__bytes "$size") >= (depth + 1) * IT_MIB)) || it_fail "mk_chain: $size too small for depth $depth"
	for ((i = 0; i <= depth; i++)); do
		file=$dir/$name.$i.qcow2
		if ((i == 0)); then
			qemu-img create -q -f qcow2 "$file" "$size" >&2
		else
			qemu-img create -q -f qcow2 -b "$prev" -F qcow2 "$file" >&2
		fi
		cmd="write -P $(chain_pattern "$i") $((i * IT_MIB)) $IT_MIB"
		out=$(qemu-io -f qcow2 -c "$cmd" "$file" 2>&1) || true
		it__io_check "mk_chain $file" "$out" "$cmd"
		prev=$file
	done
	echo "$file"
}

# qemu_io_check [-r] FILE CMD...: run qemu-io (format qcow2; -r: read-only) with each CMD
# (read/write commands) and fail the test unless every one reports success; "read -P" also
# verifies the data.
qemu_io_check() {
	local ro=() file out c
	local -a args=()
	if [[ $1 == -r ]]; then
		ro=(-r)
		shift
	fi
	file=$1
	shift
	for c; do args+=(-c "$c"); done
	out=$(qemu-io "${ro[@]}" -f qcow2 "${args[@]}" "$file" 2>&1) || true
	it__io_check "qemu-io $file" "$out" "$@"
}

# image_backing FILE: the backing file named in FILE's image header, or "none" (never an
# empty answer, so a check cannot pass on a failed command); fails the test if qemu-img
# cannot read FILE. Compare its output assigned to a variable first: a failing $(...) inside
# a command's arguments does not stop the test.
image_backing() {
	local info
	info=$(qemu-img info -U --output=json "$1" 2>&1) || it_fail "qemu-img info $1: $info"
	jq -er 'if has("backing-filename") then ."backing-filename" else "none" end' <<<"$info" ||
		it_fail "qemu-img info $1: not the JSON expected: $info"
}

# verify_chain_data TOPFILE NAME DEPTH: offline, read-only: every layer's pattern of chain
# NAME (made by mk_chain with DEPTH) reads back through TOPFILE.
verify_chain_data() {
	local top=$1 name=$2 depth=$3 i
	local -a cmds=()
	for ((i = 0; i <= depth; i++)); do
		cmds+=("read -P $(chain_pattern "$i") $((i * IT_MIB)) $IT_MIB")
	done
	[[ -f $top ]] || it_fail "verify_chain_data $name: no such file $top"
	qemu_io_check -r "$top" "${cmds[@]}"
}

# ---------------------------------------------------------------- QEMU processes

# start_vm_blockdev NAME TOPFILE...: paused q35/TCG VM, monitor $T/NAME.qmp, per TOPFILE a
# file node vdX-file, a qcow2 node vdX-top and virtio-blk-pci id vdX (vda, vdb, ...).
start_vm_blockdev() {
	local name=$1 i=0 top id letters=abcdefghijklmnopqrstuvwxyz
	local -a args=()
	shift
	for top; do
		top=$(it__optpath "$top")
		id=vd${letters:i:1}
		args+=(-blockdev "driver=file,filename=$top,node-name=$id-file"
			-blockdev "driver=qcow2,file=$id-file,node-name=$id-top"
			-device "virtio-blk-pci,drive=$id-top,id=$id")
		i=$((i + 1))
	done
	it__launch "$name" "$T/$name.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
		-display none -qmp "unix:$T/$name.qmp,server=on,wait=off" "${args[@]}"
}

# start_vm_drive NAME TOPFILE...: as start_vm_blockdev, with -drive: block backend
# drive-virtio-diskN, virtio-blk-pci id virtio-diskN.
start_vm_drive() {
	local name=$1 i=0 top
	local -a args=()
	shift
	for top; do
		top=$(it__optpath "$top")
		args+=(-drive "file=$top,if=none,id=drive-virtio-disk$i,format=qcow2"
			-device "virtio-blk-pci,drive=drive-virtio-disk$i,id=virtio-disk$i")
		i=$((i + 1))
	done
	it__launch "$name" "$T/$name.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
		-display none -qmp "unix:$T/$name.qmp,server=on,wait=off" "${args[@]}"
}

# start_qsd NAME TOPFILE...: qemu-storage-daemon, monitor $T/NAME.qmp, per TOPFILE nodes
# diskN-file + diskN (qcow2) exported writable over NBD ($T/NAME.nbd, export name diskN).
# Sets IT_NBD to the NBD socket.
start_qsd() {
	local name=$1 i=0 top
	local -a args=()
	shift
	for top; do
		top=$(it__optpath "$top")
		args+=(--blockdev "driver=file,filename=$top,node-name=disk$i-file"
			--blockdev "driver=qcow2,file=disk$i-file,node-name=disk$i"
			--export "type=nbd,id=exp$i,node-name=disk$i,writable=on")
		i=$((i + 1))
	done
	((${#T} + ${#name} + 5 < 108)) || it_fail "NBD socket path too long"
	it__launch "$name" "$T/$name.qmp" qemu-storage-daemon \
		--chardev "socket,path=$T/$name.qmp,server=on,wait=off,id=m" --monitor chardev=m \
		--nbd-server "addr.type=unix,addr.path=$T/$name.nbd" "${args[@]}"
	IT_NBD=$T/$name.nbd
	export IT_NBD
}

# qmp_raw SOCK JSON...: connect, negotiate, send each JSON command (an "id" is added), print
# each reply on one line (id removed) in order; events are skipped. Returns 1 (after printing
# every reply) if a reply is an error; fails the test if the monitor does not answer within
# IT_QMP_TIMEOUT seconds (default 30).
qmp_raw() {
	local sock=$1 to=${IT_QMP_TIMEOUT:-30} n=0 cmd line id rfd wfd pid status=0 c0 c1
	shift
	coproc IT_QMP { exec socat - "UNIX-CONNECT:$sock" 2>/dev/null; }
	pid=$IT_QMP_PID
	# Move the pipe ends to fds of our own: bash may close the coproc's as soon as socat
	# exits (QEMU closes the connection right after answering "quit"), and socat must see
	# EOF once we close our write end.
	c0=${IT_QMP[0]}
	c1=${IT_QMP[1]}
	exec {rfd}<&"$c0" {wfd}>&"$c1"
	exec {c0}<&- {c1}>&-
	if ! read -r -t "$to" -u "$rfd" line || [[ $line != *'"QMP"'* ]]; then
		it_fail "qmp_raw: no QMP greeting on $sock"
	fi
	for cmd in '{"execute":"qmp_capabilities"}' "$@"; do
		id=it-$n
		cmd=$(jq -c --arg id "$id" '. + {id: $id}' <<<"$cmd") || it_fail "qmp_raw: not a JSON object: $cmd"
		echo "$cmd" >&"$wfd"
		while :; do
			read -r -t "$to" -u "$rfd" line || it_fail "qmp_raw: no reply to $cmd on $sock within $to s"
			[[ $(jq -r '.id // empty' <<<"$line") == "$id" ]] && break
		done
		if ((n > 0)); then
			jq -c 'del(.id)' <<<"$line"
		elif [[ $line != *'"return"'* ]]; then
			it_fail "qmp_raw: qmp_capabilities refused: $line"
		fi
		if [[ $(jq -r 'has("error")' <<<"$line") == true ]]; then
			echo "qmp_raw: $cmd: $(jq -r '.error.desc' <<<"$line")" >&2
			status=1
		fi
		n=$((n + 1))
	done
	exec {wfd}>&- {rfd}<&-
	it__wait_gone "$pid" 5 || kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	return "$status"
}

# hmp_write SOCK QDEVID PATTERN OFF LEN: write PATTERN at OFF..OFF+LEN through the running
# VM's device QDEVID (its virtio-backend block backend) with HMP qemu-io, and check the
# report qemu-io prints on QEMU's stdout ($T/NAME.out for SOCK $T/NAME.qmp).
hmp_write() {
	local sock=$1 qdev=$2 pat=$3 off=$4 len=$5 out before req reply ret cmd n=100 new
	out=${sock%.qmp}.out
	[[ -f $out ]] || it_fail "hmp_write: no stdout file $out for $sock"
	cmd="write -P $pat $off $len"
	before=$(stat -L -c %s "$out")
	req=$(jq -nc --arg c "qemu-io -d /machine/peripheral/$qdev/virtio-backend \"$cmd\"" \
		'{execute: "human-monitor-command", arguments: {"command-line": $c}}')
	reply=$(qmp_raw "$sock" "$req") || it_fail "hmp_write: $reply"
	ret=$(jq -r '.return' <<<"$reply")
	[[ -z $ret ]] || it_fail "hmp_write $qdev: ${ret%%$'\n'*}"
	while ((n-- > 0)); do
		new=$(tail -c +$((before + 1)) "$out")
		grep -qE '^(wrote|write failed)' <<<"$new" && break
		sleep 0.05
	done
	it__io_check "hmp_write $qdev" "$new" "$cmd"
}

# nbd_write NBDSOCK EXPORT PATTERN OFF LEN: write PATTERN live through a qsd NBD export.
nbd_write() {
	local cmd="write -P $3 $4 $5" out
	out=$(qemu-io -f raw -c "$cmd" "nbd+unix:///$2?socket=$1" 2>&1) || true
	it__io_check "nbd_write $2" "$out" "$cmd"
}

# stop_vm NAME: "quit" through $T/NAME.qmp (VM or qsd), wait up to 10 s for the process to
# exit, fail unless it exited with status 0.
stop_vm() {
	local name=$1 pid start rc=0
	[[ -f $T/$name.pid ]] || it_fail "stop_vm: $name was not started"
	read -r pid start <"$T/$name.pid"
	qmp_raw "$T/$name.qmp" '{"execute":"quit"}' >/dev/null || it_fail "stop_vm $name: quit refused"
	it__wait_gone "$pid" 10 || it_fail "stop_vm $name: still running 10 s after quit"
	wait "$pid" 2>/dev/null || rc=$?
	rm -f -- "$T/$name.pid"
	# 127: not a child of this shell, so no status to check.
	((rc == 0 || rc == 127)) || it_fail "stop_vm $name: exit status $rc: $(tail -n 1 "$T/$name.err")"
}
