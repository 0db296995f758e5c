# shellcheck shell=bash
# integration/lib-block.sh: block-device layers for the integration tests: loop devices over
# sparse files in $T/blk, sourced after lib.sh (uses it_*, $T).
#
# blk_setup           once, in the test's own shell after it_setup: make $T/blk and have the
#                     cleanup detach every loop device made here (after the test's processes
#                     are gone, before $T is removed), on every path, failures and signals
#                     included; false (after an it_skip_case line) where loop devices
#                     cannot be made
# blk_loop NAME BYTES a loop device over the new sparse file $T/blk/NAME.img of BYTES bytes
#                     (suffix k/M/G as qemu-io takes it); prints /dev/loopN. May run in $(...):
#                     the device is recorded in $T/blk/loops, which the cleanup reads
# blk_grow DEV BYTES  grow DEV's file to BYTES and have the kernel see it (losetup -c)
# blk_size DEV        DEV's size in bytes as the kernel has it now (blockdev --getsize64)
# blk_volumes         after blk_setup: examples/volume-loop as the volume command (VCMD),
#                     its files in $T/vols (LM_LOOP_DIR, exported), volumes named under $T/v;
#                     every volume left there is removed by the cleanup
# blk_io FMT DEV CMD...  qemu-io on DEV (format FMT) with each CMD; fails the test unless
#                     each succeeds
#
# Only devices this file recorded are ever detached, and only while they still map to the
# test's own file: a loop device of someone else's (or one reused after ours went) is never
# touched.

# blk__bytes SIZE: SIZE (bytes, or with a K/M/G suffix of powers of 1024) in bytes.
blk__bytes() {
	numfmt --from=iec "${1^^}" 2>/dev/null || it_fail "lib-block: bad size '$1'"
}

# blk__file DEV: the backing file recorded for DEV (empty if DEV is not ours).
blk__file() {
	[[ -f $T/blk/loops ]] || return 0
	awk -v d="$1" '$1 == d { print $2; exit }' "$T/blk/loops"
}

# blk__detach_all: the cleanup: detach each recorded device that still maps to our file.
blk__detach_all() {
	local dev file now
	[[ -f $T/blk/loops ]] || return 0
	while read -r dev file; do
		now=$(losetup -n -O BACK-FILE "$dev" 2>/dev/null) || continue
		# losetup shows a deleted file as "PATH (deleted)"
		[[ ${now% (deleted)} == "$file" ]] || continue
		losetup -d "$dev" || echo "lib-block: could not detach $dev ($file)" >&2
	done <"$T/blk/loops"
}

blk_setup() {
	local why=
	[[ $BASHPID == "$$" ]] || it_fail "blk_setup called in a subshell"
	mkdir -p "$T/blk"
	it_on_exit blk__detach_all
	if ! command -v losetup >/dev/null || ! command -v blockdev >/dev/null; then
		why="losetup or blockdev is missing"
	elif ((EUID != 0)); then
		why="loop devices need root"
	elif [[ ! -e /dev/loop-control ]]; then
		why="no /dev/loop-control"
	fi
	if [[ -n $why ]]; then
		it_skip_case "block devices" "$why"
		return 1
	fi
}

blk_loop() {
	local name=$1 file dev
	file=$T/blk/$name.img
	[[ -d $T/blk ]] || it_fail "blk_loop: call blk_setup first"
	[[ ! -e $file ]] || it_fail "blk_loop: $file exists"
	truncate -s "$(blk__bytes "$2")" "$file" || it_fail "blk_loop: truncate $file"
	dev=$(losetup -f --show "$file") || it_fail "blk_loop: losetup -f --show $file failed"
	echo "$dev $file" >>"$T/blk/loops"
	echo "$dev"
}

blk_grow() {
	local dev=$1 file
	file=$(blk__file "$dev")
	[[ -n $file ]] || it_fail "blk_grow: $dev is not a loop device of this test"
	truncate -s "$(blk__bytes "$2")" "$file" || it_fail "blk_grow: truncate $file"
	losetup -c "$dev" || it_fail "blk_grow: losetup -c $dev failed"
}

blk_size() {
	blockdev --getsize64 "$1" || it_fail "blk_size: blockdev --getsize64 $1 failed"
}

blk_io() {
	local fmt=$1 dev=$2 out c
	local -a args=()
	shift 2
	for c; do args+=(-c "$c"); done
	out=$(qemu-io -f "$fmt" "${args[@]}" "$dev" 2>&1) || true
	it__io_check "qemu-io -f $fmt $dev" "$out" "$@"
}

blk_volumes() {
	VCMD=$IT_ROOT/examples/volume-loop
	export LM_LOOP_DIR=$T/vols
	mkdir -p "$LM_LOOP_DIR" "$T/v"
	it_on_exit "for l in $T/v/*; do [ -L \"\$l\" ] && LM_LOOP_DIR=$LM_LOOP_DIR $VCMD remove \"\$l\"; done; true"
}
