#!/usr/bin/env bash
# test-block-volumes: snapshots onto block devices and commits into them (loop devices over
# sparse files; examples/volume-loop as the engine's volume command), on a VM with
# -blockdev; data written into every layer and read back after every step.
#
# 1. snapshot onto an empty device: formatted through QMP, put on top; the guest's writes
#    land in it. Refused (exit 2, the device byte-identical, nothing sent): a device holding
#    a qcow2 header, one holding a filesystem, one holding random data, one QEMU uses.
# 2. snapshot onto a path that does not exist, with --volume-cmd: created, then formatted.
# 3. a transaction QEMU refuses (the other disk's overlay cannot be made): the device this
#    run formatted is wiped back to zeros, the volume it created removed, chains as before.
# 4. commit of three layers into a base device too small for them (grown to the layers'
#    image ends read on the host plus a chunk, not their devices' sizes): without --volume-cmd
#    refused (exit 2, the bytes needed, nothing sent); with a volume command that refuses:
#    exit 1 with its last stderr line, nothing changed; with volume-loop: extended first,
#    merged, data checked; --delete removes the layers that are volumes with CMD remove.
# it-timeout: 300
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-block.sh
. "$IT_DIR/lib-block.sh"
lm_setup
if ! blk_setup; then
	it_pass
fi
MIB=1048576
blk_volumes

# head_sum DEV: sha256 of DEV's first MiB
head_sum() {
	head -c $MIB "$1" | sha256sum | cut -d' ' -f1
}

# zeros DEV BYTES: DEV's first BYTES are all zero
zeros() {
	cmp -s -n "$2" "$1" /dev/zero
}

# layer_types DISK: "filename type" per layer
layer_types() {
	lm_ok --json chain "$1"
	jq -r '.chain[] | "\(.filename) \(.type)"' "$T/lm.out"
}

# ---------------------------------------------------------------- the VM
base=$(blk_loop base 64M)
blk_io raw "$base" "write -P 0x10 0 1M"
qemu-img create -q -f qcow2 "$T/vdb.qcow2" 64M
blk_io qcow2 "$T/vdb.qcow2" "write -P 0x20 0 1M"
# vdc: a 4M base volume under three 16M layers (section 4 commits all three into it)
"$VCMD" create "$T/v/b0" $((4 * MIB)) || it_fail "volume-loop create b0"
qemu-img create -q -f qcow2 "$T/v/b0" 64M
blk_io qcow2 "$T/v/b0" "write -P 0x30 0 512k"
prev=$T/v/b0
for i in 1 2 3; do
	"$VCMD" create "$T/v/l$i" $((16 * MIB)) || it_fail "volume-loop create l$i"
	qemu-img create -q -f qcow2 -b "$prev" -F qcow2 "$T/v/l$i" 64M
	blk_io qcow2 "$T/v/l$i" "write -P 0x3$i $((i * 2))M 2M"
	prev=$T/v/l$i
done
it__launch vm "$T/vm.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
	-display none -qmp "unix:$T/vm.qmp,server=on,wait=off" \
	-blockdev "driver=host_device,filename=$base,node-name=vda-file" \
	-blockdev "driver=raw,file=vda-file,node-name=vda-base" \
	-device "virtio-blk-pci,drive=vda-base,id=vda" \
	-blockdev "driver=file,filename=$T/vdb.qcow2,node-name=vdb-file" \
	-blockdev "driver=qcow2,file=vdb-file,node-name=vdb-top" \
	-device "virtio-blk-pci,drive=vdb-top,id=vdb" \
	-blockdev "driver=host_device,filename=$T/v/l3,node-name=vdc-file" \
	-blockdev "driver=qcow2,file=vdc-file,node-name=vdc-top" \
	-device "virtio-blk-pci,drive=vdc-top,id=vdc"
LM_SOCK=$T/vm.qmp

# ---------------------------------------------------------------- 1. refusals, then an empty device
hdr=$(blk_loop hdr 32M)
qemu-img create -q -f qcow2 "$hdr" 16M
fs=$(blk_loop fs 32M)
if command -v mkfs.ext4 >/dev/null; then
	mkfs.ext4 -q -F "$fs" >/dev/null 2>&1 || it_fail "mkfs.ext4 $fs"
else
	printf '\x53\xef' | dd of="$fs" bs=1 seek=1080 conv=notrunc status=none # ext magic
fi
rnd=$(blk_loop rnd 32M)
head -c $MIB /dev/urandom | dd of="$rnd" bs=1M seek=0 conv=notrunc status=none
before=$(state_of "$LM_SOCK")
for dev in "$hdr" "$fs" "$rnd"; do
	sum=$(head_sum "$dev")
	lm_expect 2 snapshot "vda=$dev"
	lm_one_line_error "$dev"
	it_assert_eq "$(head_sum "$dev")" "$sum" "refused $dev: its first MiB after the refusal"
done
assert_state_unchanged "$LM_SOCK" "$before" "refused snapshots"

ov1=$(blk_loop ov1 32M)
lm_ok --json snapshot "vda=$ov1"
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "snapshot onto $ov1"
it_assert_eq "$(layer_types vda)" "$ov1 block
$base block" "vda after the snapshot onto a device"
hmp_write "$T/vm.qmp" vda 0x11 $((2 * MIB)) $MIB
# the device vda now uses is no overlay for vdb
sum=$(head_sum "$ov1")
lm_expect 2 snapshot "vdb=$ov1"
lm_one_line_error "QEMU already uses"
it_assert_eq "$(head_sum "$ov1")" "$sum" "a device in use: its first MiB after the refusal"

# ---------------------------------------------------------------- 2. a volume the command makes
lm_ok --json snapshot "vda=$T/v/ov2" --volume-cmd "$VCMD" --initial-size 16M
it_assert_eq "$(layer_types vda | cut -d' ' -f2 | tr '\n' ' ')" "block block block " "vda after the snapshot onto a new volume"
it_assert_eq "$(lm_chain vda | jq -r '.[0]')" "$T/v/ov2" "vda's top"
[[ -L $T/v/ov2 && -b $T/v/ov2 ]] || it_fail "the volume command made no device at $T/v/ov2"
((16 * MIB <= $(blk_size "$(readlink "$T/v/ov2")"))) || it_fail "the new volume is smaller than --initial-size"
hmp_write "$T/vm.qmp" vda 0x12 $((3 * MIB)) $MIB

# ---------------------------------------------------------------- 3. a refused transaction
ov3=$(blk_loop ov3 32M)
before=$(state_of "$LM_SOCK")
lm_expect 1 snapshot "vda=$ov3" "vdb=$T/no/such/dir/vdb.s1.qcow2"
grep -q 'wiping' "$T/lm.err" || it_fail "the refused transaction: no wipe of $ov3: $(lm_report)"
zeros "$ov3" $((4 * MIB)) || it_fail "$ov3 still holds what this run wrote"
lm_expect 1 snapshot "vda=$T/v/ov4" "vdb=$T/no/such/dir/vdb.s1.qcow2" --volume-cmd "$VCMD"
[[ ! -e $T/v/ov4 ]] || it_fail "the volume this run created is still there: $(lm_report)"
assert_state_unchanged "$LM_SOCK" "$before" "refused transactions"
assert_no_jobs "$LM_SOCK" "refused transactions"

# ---------------------------------------------------------------- 5. killed while preparing
# SIGKILL right after each step is journaled: recover removes the volume the run created
# (wiping what it wrote first), leaves every chain as it was and no node behind
before=$(state_of "$LM_SOCK")
for step in device-add format overlay-add snapshot; do
	LIVEMERGE_CRASH_AT=$step lm snapshot "vda=$T/v/k-$step" --volume-cmd "$VCMD" --initial-size 16M
	((LM_RC == 137)) || it_fail "the crash point '$step' did not kill livemerge: $(lm_report)"
	[[ -e $T/v/k-$step ]] || it_fail "killed at $step: the volume was never made"
	lm_ok recover --volume-cmd "$VCMD"
	[[ ! -e $T/v/k-$step ]] || it_fail "killed at $step: recover left the volume: $(lm_report)"
	assert_state_unchanged "$LM_SOCK" "$before" "recovered after a kill at $step"
done

# ---------------------------------------------------------------- 4. commit into a small base
before=$(state_of "$LM_SOCK")
lm_expect 2 commit vdc --top "$T/v/l3" --base "$T/v/b0"
lm_one_line_error "needs"
grep -q 'give --volume-cmd' "$T/lm.err" || it_fail "the refusal does not say what to do: $(lm_report)"
assert_state_unchanged "$LM_SOCK" "$before" "a commit refused for space"

cat >"$T/refuse-cmd" <<'EOF'
#!/bin/sh
echo "lvextend: some detail" >&2
echo "Insufficient free space: 1024 extents needed, but only 12 available" >&2
exit 5
EOF
chmod +x "$T/refuse-cmd"
size_b0=$(blk_size "$(readlink "$T/v/b0")")
lm_expect 1 commit vdc --top "$T/v/l3" --base "$T/v/b0" --volume-cmd "$T/refuse-cmd"
grep -q 'Insufficient free space' "$T/lm.err" || it_fail "the volume command's reason is not shown: $(lm_report)"
assert_state_unchanged "$LM_SOCK" "$before" "a commit whose volume command refused"
assert_no_jobs "$LM_SOCK" "a commit whose volume command refused"
it_assert_eq "$(blk_size "$(readlink "$T/v/b0")")" "$size_b0" "the base after a refused extend"

# killed right after the extend, before the job starts: recover leaves the base grown and
# every chain as it was
# The base is grown to what the commit brings into it: each layer's image end read on the
# host (qemu-img check's "image end offset"), not each device's size (4 + 3 x 16 MiB), plus
# one chunk for the active commit.
need=$((8 * MIB))
for f in b0 l1 l2 l3; do
	end=$(qemu-img check -U --output=json "$T/v/$f" | jq '."image-end-offset"')
	need=$((need + end))
done
LIVEMERGE_CRASH_AT=start lm commit vdc --top "$T/v/l3" --base "$T/v/b0" --volume-cmd "$VCMD" --chunk 8M
((LM_RC == 137)) || it_fail "the crash point 'start' did not kill livemerge: $(lm_report)"
grown=$(blk_size "$(readlink "$T/v/b0")")
((grown > size_b0)) || it_fail "killed after the extend: the base was not grown ($grown)"
((grown >= need && grown < need + MIB)) ||
	it_fail "the base was grown to $grown bytes, not to the layers' ends plus a chunk ($need)"
lm_ok recover --volume-cmd "$VCMD"
assert_state_unchanged "$LM_SOCK" "$before" "recovered after a kill after the extend"
it_assert_eq "$(blk_size "$(readlink "$T/v/b0")")" "$grown" "the base after recover"

hmp_write "$T/vm.qmp" vdc 0x3f $((10 * MIB)) $MIB
lm_ok --json commit vdc --top "$T/v/l3" --base "$T/v/b0" --volume-cmd "$VCMD" --delete --chunk 8M
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, (.left // [] | length)]')" '[true,0,0]' "commit into the small base"
(($(blk_size "$(readlink "$T/v/b0")") > size_b0)) || it_fail "the base was not extended: $(lm_report)"
assert_chain vdc "$T/v/b0"
for i in 1 2 3; do
	[[ ! -e $T/v/l$i ]] || it_fail "--delete left the volume l$i: $(lm_report)"
done
hmp_write "$T/vm.qmp" vdc 0x40 $((12 * MIB)) $MIB

# ---------------------------------------------------------------- the data, offline
top=$(lm_chain vda | jq -r '.[0]')
stop_vm vm
blk_io qcow2 "$top" "read -P 0x10 0 1M" "read -P 0x11 2M 1M" "read -P 0x12 3M 1M"
blk_io qcow2 "$T/v/b0" "read -P 0x30 0 512k" "read -P 0x31 2M 2M" "read -P 0x32 4M 2M" \
	"read -P 0x33 6M 2M" "read -P 0x3f 10M 1M" "read -P 0x40 12M 1M"
out=$(qemu-img check -f qcow2 "$T/v/b0" 2>&1) || it_fail "qemu-img check of the grown base: $out"
it_pass
