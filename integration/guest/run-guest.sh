# shellcheck shell=bash
# integration/guest/run-guest.sh: helpers to run the test guest (build.sh) under QEMU/TCG,
# talk to its qemu-ga and read what its writer acknowledged. Source it after integration/lib.sh
# and call it_setup first; like lib.sh's start_*, start_guest must run in the test's own shell.
#
#   guest_build                     build or reuse the guest in $GUEST_DIR (build/guest)
#   guest_mkfs FILE SIZE            a qcow2 image holding an empty ext4 filesystem (mkfs.ext4)
#   start_guest NAME [-r RATE] [-f FSIMAGE] TOPFILE...
#                                   boot the guest; TOPFILE... (qcow2; on a block device, or a
#                                   link to one: host_device) are the log disks vda,
#                                   vdb, ...; FSIMAGE the next letter, mounted at /mnt. Returns
#                                   once qemu-ga answers and every disk has an ACK; sets
#                                   GUEST_BOOT_SECONDS (QEMU start to the last first ACK)
#   guest_qga NAME JSON [TIMEOUT]   one qemu-ga command, framed with 0xFF + guest-sync-delimited;
#                                   prints the reply (one JSON line); status 1 on an error reply
#   guest_last_ack NAME DISK        last acknowledged seq of DISK (0 if none)
#   guest_last_fsack NAME           last acknowledged record of the /mnt appender (0 if none)
#   guest_wait_ack NAME DISK SEQ [TIMEOUT]   wait until DISK's ack reaches SEQ
#   guest_check NAME DISK IMAGE     check-disk.sh against NAME's ack file (see check-disk.sh)
#   guest_check_live NAME DISK      the same, live: the VM paused, its disk read over NBD
#   guest_fs_require                fail unless e2fsck and debugfs (e2fsprogs) are here
#   guest_fs_records RAW            records of the appender's /lm.log in the ext4 image RAW
#   stop_guest NAME                 quit through QMP (lib.sh's stop_vm)
#
# Layout of a guest NAME (disk N = vda, vdb, ... in the order given; the fs disk last):
#   the same as lib.sh's start_vm_blockdev: file node vdX-file, qcow2 node vdX-top,
#   virtio-blk-pci id vdX (also its serial, which the guest's writer matches the name by);
#   $T/NAME.qmp QMP, $T/NAME.mon2 a second QMP monitor (for a test's own eyes while a
#   livemerge holds the first: QEMU serves one client per monitor), $T/NAME.qga qemu-ga (virtio-serial port org.qemu.guest_agent.0),
#   $T/NAME.ack the writer's ACK lines (port org.livemerge.ack.0, a chardev file),
#   $T/NAME.console the serial console (kernel, /init's LMGUEST lines, writer LOG/ERR lines).
# The writer's ACK protocol (writer.c): "ACK <disk> <seq>" after the fdatasync that made seqs up
# to <seq> durable; "FSACK <disk> <n>" after fsync of record n of /mnt/lm.log; "ERR ..." lines.

GUEST_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_DIR=${GUEST_DIR:-$(dirname "$(dirname "$GUEST_SRC")")/build/guest}
GUEST_MEM=${GUEST_MEM:-256}
GUEST_BOOT_TIMEOUT=${GUEST_BOOT_TIMEOUT:-90}

guest_build() {
	"$GUEST_SRC/build.sh" "$GUEST_DIR" || it_fail "building the test guest failed (integration/guest/build.sh)"
}

# (the guest would format a blank disk itself, as ext2 with busybox: not what the tests
# check, so mkfs.ext4 is required here like e2fsck and debugfs)
guest_mkfs() {
	local file=$1 size=$2 raw=$T/.mkfs.$$.raw
	command -v mkfs.ext4 >/dev/null 2>&1 ||
		it_fail "mkfs.ext4 is missing: install e2fsprogs (scripts/deps.sh check installs it)"
	rm -f -- "$raw"
	truncate -s "$size" "$raw"
	mkfs.ext4 -q -F -L lmfs "$raw" >&2 || it_fail "mkfs.ext4 $raw failed"
	qemu-img convert -q -f raw -O qcow2 "$raw" "$file" >&2 || it_fail "qemu-img convert $raw failed"
	rm -f -- "$raw"
}

# guest__ack_lines FILE: FILE without an unfinished last line.
guest__ack_lines() {
	[[ -f $1 ]] || return 0
	if [[ -n $(tail -c 1 "$1") ]]; then
		head -n -1 "$1"
	else
		cat "$1"
	fi
}

guest_last_ack() {
	guest__ack_lines "$T/$1.ack" | awk -v d="$2" '$1 == "ACK" && $2 == d { s = $3 } END { print s + 0 }'
}

guest_last_fsack() {
	guest__ack_lines "$T/$1.ack" | awk '$1 == "FSACK" { s = $3 } END { print s + 0 }'
}

guest_wait_ack() {
	local name=$1 disk=$2 seq=$3 n=$((${4:-30} * 20))
	while ((n-- > 0)); do
		(($(guest_last_ack "$name" "$disk") >= seq)) && return 0
		sleep 0.05
	done
	it_fail "guest $name: $disk not acknowledged up to $seq within ${4:-30} s (last $(guest_last_ack "$name" "$disk"))"
}

# guest_qga NAME JSON [TIMEOUT]: see the top of this file. A fresh connection each time. 0xFF
# resets qemu-ga's parser, and qemu-ga puts 0xFF before its reply to guest-sync-delimited: what
# an earlier client left in the channel (its unread replies, which QEMU hands to the next
# client) is dropped up to the reply to our id. A sync unanswered for a second is sent again
# with a new id, and only the newest id counts: qemu-ga answers in order, so after that reply
# nothing older is pending. Note: a client must keep its end open until it has the reply (a
# "socat" whose stdin ends closes the connection, and the reply goes to the next client).
guest_qga() {
	local sock=$T/$1.qga cmd=$2 to=${3:-10} id line rfd wfd pid status=2 deadline
	local LC_ALL=C
	[[ -S $sock ]] || it_fail "guest_qga: no socket $sock"
	deadline=$((SECONDS + to))
	coproc GUEST_QGA { exec socat - "UNIX-CONNECT:$sock" 2>/dev/null; }
	pid=$GUEST_QGA_PID
	exec {rfd}<&"${GUEST_QGA[0]}" {wfd}>&"${GUEST_QGA[1]}"
	while ((status == 2 && SECONDS <= deadline)); do
		id=$((RANDOM * 32768 + RANDOM))
		# In a subshell that ignores SIGPIPE: socat may be gone (QEMU quit).
		(
			trap '' PIPE
			printf '\377{"execute":"guest-sync-delimited","arguments":{"id":%d}}\n' "$id" >&"$wfd"
		) 2>/dev/null || break
		while read -r -t 1 -u "$rfd" line; do
			line=${line##*$'\377'}
			if [[ $(jq -r '.return // empty' <<<"$line" 2>/dev/null) == "$id" ]]; then
				status=0
				break
			fi
		done
	done
	if ((status == 0)); then
		status=2
		(
			trap '' PIPE
			echo "$cmd" >&"$wfd"
		) 2>/dev/null
		if read -r -t "$to" -u "$rfd" line; then
			echo "$line"
			status=0
			jq -e 'has("return")' <<<"$line" >/dev/null 2>&1 || status=1
		fi
	fi
	exec {wfd}>&- {rfd}<&-
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	((status != 2)) || echo "guest_qga: no answer from qemu-ga on $sock within $to s" >&2
	return "$status"
}

start_guest() {
	local name=$1 rate=${GUEST_RATE:-100} fs='' i=0 id top disks='' letters=abcdefghijklmnopqrstuvwxyz
	local start deadline d append skip drv
	local -a args=() logdisks=()
	shift
	while (($#)); do
		case $1 in
		-r) rate=$2 && shift 2 ;;
		-f) fs=$2 && shift 2 ;;
		*) break ;;
		esac
	done
	(($# >= 1)) || it_fail "start_guest: no disk"
	[[ -f $GUEST_DIR/vmlinuz && -f $GUEST_DIR/initrd.img ]] || guest_build
	for top in "$@" ${fs:+"$fs"}; do
		id=vd${letters:i:1}
		drv=file
		[[ ! -b $top ]] || drv=host_device # a block device (a volume), or a link to one
		top=$(it__optpath "$top")
		args+=(-blockdev "driver=$drv,filename=$top,node-name=$id-file"
			-blockdev "driver=qcow2,file=$id-file,node-name=$id-top"
			-device "virtio-blk-pci,drive=$id-top,id=$id,serial=$id")
		if ((i < $#)); then
			logdisks+=("$id")
		fi
		i=$((i + 1))
	done
	disks=$(
		IFS=,
		echo "${logdisks[*]}"
	)
	append="console=ttyS0 quiet panic=-1 lm.disks=$disks lm.rate=$rate"
	[[ -z $fs ]] || append+=" lm.fsdisk=vd${letters:i-1:1}"
	append+=${GUEST_APPEND:+ $GUEST_APPEND}
	# The ack file is appended to, so a guest restarted under the same NAME (after a crash, on
	# a merged chain) keeps the acknowledgements of its earlier runs; only new lines count here.
	skip=0
	if [[ -s $T/$name.ack ]]; then
		[[ -z $(tail -c 1 "$T/$name.ack") ]] || echo >>"$T/$name.ack" # end a cut line
		skip=$(wc -l <"$T/$name.ack")
	fi
	start=$(date +%s%N)
	it__launch "$name" "$T/$name.qmp" qemu-system-x86_64 -machine q35,accel=tcg -m "$GUEST_MEM" \
		-nodefaults -display none -no-reboot \
		-kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initrd.img" -append "$append" \
		-chardev "file,id=console0,path=$T/$name.console,append=on" -serial chardev:console0 \
		-qmp "unix:$T/$name.qmp,server=on,wait=off" \
		-qmp "unix:$T/$name.mon2,server=on,wait=off" \
		-device virtio-serial-pci,id=vserial0 \
		-chardev "socket,id=qga0,path=$T/$name.qga,server=on,wait=off" \
		-device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
		-chardev "file,id=ack0,path=$T/$name.ack,append=on" \
		-device virtserialport,chardev=ack0,name=org.livemerge.ack.0 \
		"${args[@]}"
	# qemu-ga first, then an ACK from every disk (and the appender).
	deadline=$((SECONDS + GUEST_BOOT_TIMEOUT))
	while :; do
		guest_qga "$name" '{"execute":"guest-ping"}' 1 >/dev/null 2>&1 && break
		guest__boot_tick "$name" "qemu-ga to answer guest-ping"
	done
	for d in "${logdisks[@]}" ${fs:+FSACK}; do
		while :; do
			guest__ack_lines "$T/$name.ack" | tail -n +$((skip + 1)) |
				awk -v d="$d" '($1 == "ACK" && $2 == d) || ($1 == d) { f = 1 } END { exit !f }' && break
			guest__boot_tick "$name" "a first $d ACK"
		done
	done
	GUEST_BOOT_SECONDS=$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.1f", ns / 1e9 }')
	export GUEST_BOOT_SECONDS
	it_log "guest $name up in $GUEST_BOOT_SECONDS s (disks $disks${fs:+, fs vd${letters:i-1:1}})"
}

# guest__boot_tick NAME WHAT: sleep 0.1 s; fail with the console's tail when start_guest's
# deadline has passed or QEMU died.
guest__boot_tick() {
	local pid start
	read -r pid start <"$T/$1.pid"
	if ! it__alive "$pid" || ((SECONDS > deadline)); then
		echo "--- $T/$1.console (tail)" >&2
		tail -n 30 "$T/$1.console" >&2 || true
		echo "--- $T/$1.err" >&2
		cat "$T/$1.err" >&2 || true
		it_fail "guest $1: no $2 within $GUEST_BOOT_TIMEOUT s"
	fi
	sleep 0.1
}

guest_check() {
	"$GUEST_SRC/check-disk.sh" "$3" "$2" "$T/$1.ack"
}

# guest_check_live NAME DISK: check DISK of the running guest through QEMU itself: pause the VM
# (QMP stop: no write in flight, every ACK written so far is in the ack file), export the node
# the device DISK writes to now (whatever a merge made of the chain) read-only over NBD
# ($T/NAME.nbd; nbd-server-start on first use), run check-disk.sh on it, remove the export,
# resume the VM if it was running. Prints the summary line; status as check-disk.sh's.
guest_check_live() {
	local name=$1 disk=$2 sock=$T/$1.qmp running node args rc=0
	running=$(qmp_raw "$sock" '{"execute":"query-status"}' | jq -r .return.running)
	if [[ $running == true ]]; then
		qmp_raw "$sock" '{"execute":"stop"}' >/dev/null || it_fail "guest_check_live: stop refused"
	fi
	node=$(qmp_raw "$sock" '{"execute":"query-block"}' |
		jq -r --arg q "/machine/peripheral/$disk/virtio-backend" '.return[] | select(.qdev == $q) | .inserted["node-name"]')
	[[ -n $node ]] || it_fail "guest_check_live: no device $disk in query-block"
	if [[ ! -S $T/$name.nbd ]]; then
		args=$(jq -nc --arg p "$T/$name.nbd" '{addr: {type: "unix", data: {path: $p}}}')
		qmp_raw "$sock" "{\"execute\":\"nbd-server-start\",\"arguments\":$args}" >/dev/null ||
			it_fail "guest_check_live: nbd-server-start refused"
	fi
	args=$(jq -nc --arg n "$node" --arg d "$disk" '{type: "nbd", id: ("lmcheck-" + $d), "node-name": $n, name: $d, writable: false}')
	qmp_raw "$sock" "{\"execute\":\"block-export-add\",\"arguments\":$args}" >/dev/null ||
		it_fail "guest_check_live: block-export-add of $node refused"
	"$GUEST_SRC/check-disk.sh" "nbd+unix:///$disk?socket=$T/$name.nbd" "$disk" "$T/$name.ack" || rc=$?
	qmp_raw "$sock" "{\"execute\":\"block-export-del\",\"arguments\":{\"id\":\"lmcheck-$disk\"}}" >/dev/null ||
		it_fail "guest_check_live: block-export-del refused"
	if [[ $running == true ]]; then
		qmp_raw "$sock" '{"execute":"cont"}' >/dev/null || it_fail "guest_check_live: cont refused"
	fi
	return "$rc"
}

guest_fs_require() {
	local t
	for t in e2fsck debugfs; do
		command -v "$t" >/dev/null 2>&1 ||
			it_fail "$t is missing: install e2fsprogs (scripts/deps.sh check installs it)"
	done
}

# guest_fs_records RAW: how many records /lm.log in the ext4 image RAW (a raw file) holds; they
# must be 1, 2, ... in order. Fails the test if debugfs cannot read the log or a record is out
# of place (the number and place of the first bad one in the message).
guest_fs_records() {
	local raw=$1 out err n
	guest_fs_require
	out=$(debugfs -R 'cat /lm.log' "$raw" 2>"$T/.debugfs.err") || it_fail "debugfs on $raw: $(cat "$T/.debugfs.err")"
	# debugfs says "debugfs 1.47.0 (5-Feb-2023)" on stderr, then only problems, and exits 0 on them
	err=$(grep -v '^debugfs [0-9]' "$T/.debugfs.err" || true)
	[[ -z $err ]] || it_fail "debugfs cat /lm.log in $raw: ${err%%$'\n'*}"
	[[ -n $out ]] || it_fail "/lm.log in $raw is empty"
	n=$(awk '!bad && $1 + 0 != NR { bad = NR ": " $0 } END { print bad ? "bad record " bad : NR }' <<<"$out")
	[[ $n =~ ^[0-9]+$ ]] || it_fail "/lm.log in $raw: $n"
	echo "$n"
}

stop_guest() {
	stop_vm "$1"
}
