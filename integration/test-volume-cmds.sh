#!/usr/bin/env bash
# test-volume-cmds: the example volume commands (examples/volume-loop, examples/volume-lvm)
# against the contract in README's "Volume commands":
#   volume-loop, for real (loop devices over sparse files in $T/loops): create gives a device
#     of at least BYTES behind a symlink; extend grows it (blockdev --getsize64), extend to a
#     smaller size changes nothing; remove detaches the device and deletes file and symlink;
#     refusals (existing PATH, unknown volume, no LM_LOOP_DIR) exit 1 with one stderr line;
#     bad arguments exit 2 with the usage.
#   volume-lvm, with fake lvcreate/lvextend/lvchange/lvremove/lvs on PATH that record their
#     argv (LVM cannot activate a volume here: no device-mapper): the exact LVM command
#     lines, extend skipped when lvs says the volume is big enough, a failing LVM command
#     gives exit 1 and a line naming it; bad arguments exit 2 with nothing run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_setup
LOOP=$IT_ROOT/examples/volume-loop
LVM=$IT_ROOT/examples/volume-lvm
MIB=1048576

# vol CMD ARGS...: run a volume command; stdout+stderr in $T/vol.err, exit status in VRC
vol() {
	VRC=0
	"$@" >"$T/vol.out" 2>"$T/vol.err" </dev/null || VRC=$?
}

# expect RC WHAT STDERR-PART CMD ARGS...: run, fail unless it exits RC; for RC 1, stderr is
# exactly one line containing STDERR-PART; for RC 2, it starts with "usage:".
expect() {
	local rc=$1 what=$2 part=$3
	shift 3
	vol "$@"
	((VRC == rc)) || it_fail "$what: exit $VRC, expected $rc: $(head -n 2 "$T/vol.err")"
	case $rc in
	0) [[ ! -s $T/vol.err ]] || it_fail "$what: stderr: $(head -n 2 "$T/vol.err")" ;;
	1)
		[[ $(grep -c . "$T/vol.err") == 1 ]] || it_fail "$what: expected one stderr line: $(cat "$T/vol.err")"
		grep -qF -- "$part" "$T/vol.err" || it_fail "$what: stderr lacks '$part': $(cat "$T/vol.err")"
		;;
	2) grep -q '^usage: ' "$T/vol.err" || it_fail "$what: no usage on stderr: $(cat "$T/vol.err")" ;;
	esac
}

# ---------------------------------------------------------------- volume-lvm, fake LVM
mkdir -p "$T/bin"
for c in lvcreate lvextend lvchange lvremove lvs; do
	cat >"$T/bin/$c" <<EOF
#!/bin/sh
echo "$c \$*" >>"$T/calls"
[ ! -e "$T/fail-$c" ] || { echo "$c: fake failure" >&2; exit 5; }
[ "$c" != lvs ] || echo "  \$(cat "$T/lvsize")"
EOF
	chmod +x "$T/bin/$c"
done
calls() {
	cat "$T/calls" 2>/dev/null || true
	rm -f "$T/calls"
}
export PATH=$T/bin:$PATH

expect 0 "lvm create" "" "$LVM" create /dev/vg0/disk1 1000000000
it_assert_eq "$(calls)" "lvcreate -n disk1 -L 1000000000b vg0" "lvm create: commands"
echo 1002438656 >"$T/lvsize"
expect 0 "lvm extend" "" "$LVM" extend /dev/vg0/disk1 2147483648
it_assert_eq "$(calls)" "lvs --noheadings --nosuffix --units b -o lv_size vg0/disk1
lvextend -L 2147483648b vg0/disk1
lvchange --refresh vg0/disk1" "lvm extend: commands"
expect 0 "lvm extend, big enough" "" "$LVM" extend /dev/vg0/disk1 1002438656
it_assert_eq "$(calls)" "lvs --noheadings --nosuffix --units b -o lv_size vg0/disk1" "lvm extend to the size it has: commands"
expect 0 "lvm remove" "" "$LVM" remove /dev/vg0/disk1
it_assert_eq "$(calls)" "lvremove -f vg0/disk1" "lvm remove: commands"
touch "$T/fail-lvextend"
echo 1 >"$T/lvsize"
expect 1 "lvm extend, lvextend fails" "lvextend -L 5120b vg0/disk1 failed: lvextend: fake failure" "$LVM" extend /dev/vg0/disk1 5120
calls >/dev/null
rm -f "$T/fail-lvextend"
echo "no size" >"$T/lvsize"
expect 1 "lvm extend, lvs says nonsense" "not a size" "$LVM" extend /dev/vg0/disk1 5120
calls >/dev/null
for args in "" "create" "create /dev/vg0/x" "create /dev/vg0/x 12k" "create /dev/vg0/x 0" \
	"create /dev/vg0/x -5" "create vg0/x 512" "create /dev/vg0 512" "create /dev/vg0/a/b 512" \
	"create /dev/vg0/.. 512" "extend /dev/vg0/x" "remove" "remove /dev/vg0/x extra" "resize /dev/vg0/x 512"; do
	# shellcheck disable=SC2086 # the words of each case
	expect 2 "lvm bad arguments '$args'" "" "$LVM" $args
done
it_assert_eq "$(calls)" "" "lvm: bad arguments ran no LVM command"

# ---------------------------------------------------------------- volume-loop, for real
if ! command -v losetup >/dev/null || ((EUID != 0)) || [[ ! -e /dev/loop-control ]]; then
	it_skip_case "volume-loop" "loop devices need root, losetup and /dev/loop-control"
	it_pass
fi
export LM_LOOP_DIR=$T/loops
mkdir -p "$LM_LOOP_DIR"
# whatever happens, detach the loop devices over our files (and only those)
it_on_exit 'for f in "$T"/loops/*.img; do for d in $(losetup -n -O NAME -j "$f"); do losetup -d "$d"; done; done'
v=$T/vol1
expect 0 "loop create" "" "$LOOP" create "$v" 10000000
[[ -L $v ]] || it_fail "loop create: $v is not a symlink"
dev=$(readlink -f "$v")
[[ -b $dev ]] || it_fail "loop create: $v -> $dev is not a block device"
it_assert_eq "$(losetup -n -O BACK-FILE "$dev")" "$LM_LOOP_DIR/vol1.img" "loop create: backing file"
it_assert_eq "$(blockdev --getsize64 "$v")" 10000384 "loop create: size (rounded up to 512)"
expect 1 "loop create over an existing volume" "exists" "$LOOP" create "$v" 1048576
expect 0 "loop extend" "" "$LOOP" extend "$v" $((64 * MIB))
it_assert_eq "$(blockdev --getsize64 "$dev")" $((64 * MIB)) "loop extend: size"
it_assert_eq "$(readlink -f "$v")" "$dev" "loop extend: same device"
expect 0 "loop extend to smaller" "" "$LOOP" extend "$v" $((8 * MIB))
it_assert_eq "$(blockdev --getsize64 "$dev")" $((64 * MIB)) "loop extend to smaller: size unchanged"
expect 1 "loop extend of no volume" "not a volume" "$LOOP" extend "$T/nope" $MIB
( unset LM_LOOP_DIR; expect 1 "loop without LM_LOOP_DIR" "LM_LOOP_DIR" "$LOOP" extend "$v" $MIB )
for args in "" "create" "create $v" "create $v 1M" "create $v 0" "extend $v" "remove" \
	"remove $v x" "grow $v 512"; do
	# shellcheck disable=SC2086 # the words of each case
	expect 2 "loop bad arguments '$args'" "" "$LOOP" $args
done
expect 0 "loop remove" "" "$LOOP" remove "$v"
[[ ! -e $v && ! -L $v ]] || it_fail "loop remove: $v is still there"
[[ ! -e $LM_LOOP_DIR/vol1.img ]] || it_fail "loop remove: the backing file is still there"
[[ -z $(losetup -n -O NAME -j "$LM_LOOP_DIR/vol1.img") ]] || it_fail "loop remove: a device still maps the file"
expect 1 "loop remove again" "not a volume" "$LOOP" remove "$v"

it_pass
