#!/usr/bin/env bash
# test-block-chain: chains whose layers are block devices (loop devices over sparse files,
# QEMU driver host_device), on a VM (-blockdev) and on qemu-storage-daemon:
#   vm  vda: raw base (64M device) <- qcow2 (32M device) <- qcow2 top (32M device)
#       vdb: qcow2 base (32M device) <- qcow2 top (16M device)
#   qsd disk0: qcow2 base (80M device) <- qcow2 top (32M device), exported over NBD; disk1 a
#       qcow2 file. A snapshot the daemon refuses after livemerge formatted an empty device:
#       the device is wiped back to zeros on the host (the daemon has no HMP)
# Each layer gets its pattern with qemu-io before QEMU starts. `chain` and `chain --json`
# must show every layer as "block" with its virtual size, the device's byte size and 0
# allocated (nothing written since QEMU opened it); after a live write, the top's allocated
# is the image's end, which qemu-img check confirms once QEMU stopped. A device grown under
# QEMU keeps its old size in QEMU's report, and chain shows its size now. Then an intermediate commit into the raw base and
# a stream into vdb's top (VM), an active commit (qsd); data checked offline with qemu-io
# read -P and qemu-img compare against raw references.
# it-timeout: 240
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

# chain_json DISK: livemerge --json chain DISK
chain_json() {
	lm_ok --json chain "$1"
	cat "$T/lm.out"
}

# layers DISK: per layer "filename type virtual-size size allocated", one a line
layers() {
	chain_json "$1" | jq -r '.chain[] | "\(.filename) \(.type) \(."virtual-size") \(.size) \(.allocated)"'
}

# want_layer DEV VSIZE [ALLOCATED]: the line layers prints for DEV (allocated default 0)
want_layer() {
	echo "$1 block $2 $(blk_size "$1") ${3:-0}"
}

# end_offset FILE: qemu-img check's "Image end offset" of a qcow2 image
end_offset() {
	local out
	out=$(qemu-img check -f qcow2 "$1" 2>&1) || it_fail "qemu-img check $1: $out"
	sed -n 's/^Image end offset: \([0-9]*\)$/\1/p' <<<"$out"
}

# ref NAME PATTERN@OFF... : a raw 64M reference file with 1 MiB of PATTERN at each OFF (MiB)
ref() {
	local f=$T/blk/$1.ref p
	shift
	truncate -s 64M "$f"
	for p; do blk_io raw "$f" "write -P ${p%@*} $((${p#*@} * MIB)) $MIB"; done
	echo "$f"
}

# compare FMT DEV REF: qemu-img compare of DEV (format FMT) with the raw REF
compare() {
	local out rc=0
	out=$(qemu-img compare -f "$1" -F raw "$2" "$3" 2>&1) || rc=$?
	((rc == 0)) || it_fail "qemu-img compare $2 $3: exit $rc: $out"
}

# ---------------------------------------------------------------- VM, -blockdev host_device
a=$(blk_loop a 64M)
b=$(blk_loop b 32M)
c=$(blk_loop c 32M)
d=$(blk_loop d 32M)
e=$(blk_loop e 16M)
blk_io raw "$a" "write -P 0x10 0 1M"
qemu-img create -q -f qcow2 -b "$a" -F raw "$b" 64M
blk_io qcow2 "$b" "write -P 0x11 1M 1M"
qemu-img create -q -f qcow2 -b "$b" -F qcow2 "$c" 64M
blk_io qcow2 "$c" "write -P 0x12 2M 1M"
qemu-img create -q -f qcow2 "$d" 64M
blk_io qcow2 "$d" "write -P 0x20 0 1M"
qemu-img create -q -f qcow2 -b "$d" -F qcow2 "$e" 64M
blk_io qcow2 "$e" "write -P 0x21 1M 1M"

it__launch vm "$T/vm.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
	-display none -qmp "unix:$T/vm.qmp,server=on,wait=off" \
	-blockdev "driver=host_device,filename=$c,node-name=vda-file" \
	-blockdev "driver=qcow2,file=vda-file,node-name=vda-top" \
	-device "virtio-blk-pci,drive=vda-top,id=vda" \
	-blockdev "driver=host_device,filename=$e,node-name=vdb-file" \
	-blockdev "driver=qcow2,file=vdb-file,node-name=vdb-top" \
	-device "virtio-blk-pci,drive=vdb-top,id=vdb"
LM_SOCK=$T/vm.qmp
V=$((64 * MIB))

it_assert_eq "$(layers vda)" "$(want_layer "$c" $V; want_layer "$b" $V; want_layer "$a" $V)" "vm: vda's layers"
it_assert_eq "$(layers vdb)" "$(want_layer "$e" $V; want_layer "$d" $V)" "vm: vdb's layers"
it_assert_eq "$(chain_json vda | jq -r '[.chain[].format] | join(" ")')" "qcow2 qcow2 raw" "vm: vda's formats"
lm_ok chain vda
grep -qF "$c  qcow2  64 MiB  block 32 MiB, allocated 0 B" "$T/lm.out" ||
	it_fail "vm: chain vda does not show the top's device: $(cat "$T/lm.out")"
grep -qF "$a  raw  64 MiB  block 64 MiB, allocated 0 B" "$T/lm.out" ||
	it_fail "vm: chain vda does not show the base's device: $(cat "$T/lm.out")"

# a live write grows the top's image: allocated is its new end
hmp_write "$T/vm.qmp" vda 0x13 $((8 * MIB)) $MIB
alloc=$(chain_json vda | jq -r '.chain[0].allocated')
((alloc > 2 * MIB && alloc <= 32 * MIB)) || it_fail "vm: vda's top allocated $alloc after a write"

# a device grown under QEMU: QEMU's report keeps the size it opened, chain shows the size
# the kernel has now (asked on the host)
blk_grow "$e" 24M
it_assert_eq "$(blk_size "$e")" $((24 * MIB)) "vm: grown device size"
it_assert_eq "$(qmp_raw "$T/vm.qmp" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' |
	jq --arg f "$e" '.return[] | select(.drv == "host_device" and .file == $f) | .image."virtual-size"')" \
	$((16 * MIB)) "vm: QEMU's size of vdb's grown top device"
it_assert_eq "$(chain_json vdb | jq -r '.chain[0].size')" $((24 * MIB)) "vm: vdb's top size after growing its device"

# intermediate commit of b into the raw base a; stream d into vdb's top e
lm_ok --json commit vda --top "$b" --base "$a"
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "vm: commit result"
assert_chain vda "$c" "$a"
lm_ok --json stream vdb
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "vm: stream result"
assert_chain vdb "$e"
it_assert_eq "$(layers vdb | cut -d' ' -f1-3)" "$e block $V" "vm: vdb after the stream"
alloc=$(chain_json vda | jq -r '.chain[0].allocated')
stop_vm vm

it_assert_eq "$(end_offset "$c")" "$alloc" "vm: vda's top end (qemu-img check) against allocated"
blk_io raw "$a" "read -P 0x10 0 1M" "read -P 0x11 1M 1M"
blk_io qcow2 "$c" "read -P 0x10 0 1M" "read -P 0x11 1M 1M" "read -P 0x12 2M 1M" "read -P 0x13 8M 1M"
compare qcow2 "$c" "$(ref vda 0x10@0 0x11@1 0x12@2 0x13@8)"
it_assert_eq "$(image_backing "$e")" none "vm: vdb's top after the stream"
compare qcow2 "$e" "$(ref vdb 0x20@0 0x21@1)"

# ---------------------------------------------------------------- qemu-storage-daemon
f=$(blk_loop f 80M) # room for all a commit into it may need: the engine checks
g=$(blk_loop g 32M)
qemu-img create -q -f qcow2 "$f" 64M
blk_io qcow2 "$f" "write -P 0x30 0 1M"
qemu-img create -q -f qcow2 -b "$f" -F qcow2 "$g" 64M
blk_io qcow2 "$g" "write -P 0x31 1M 1M"
h=$T/qs-h.qcow2
qemu-img create -q -f qcow2 "$h" 64M
it__launch qs "$T/qs.qmp" qemu-storage-daemon \
	--chardev "socket,path=$T/qs.qmp,server=on,wait=off,id=m" --monitor chardev=m \
	--nbd-server "addr.type=unix,addr.path=$T/qs.nbd" \
	--blockdev "driver=host_device,filename=$g,node-name=disk0-file" \
	--blockdev "driver=qcow2,file=disk0-file,node-name=disk0" \
	--export "type=nbd,id=exp0,node-name=disk0,writable=on" \
	--blockdev "driver=file,filename=$h,node-name=disk1-file" \
	--blockdev "driver=qcow2,file=disk1-file,node-name=disk1" \
	--export "type=nbd,id=exp1,node-name=disk1,writable=on"
LM_SOCK=$T/qs.qmp
it_assert_eq "$(layers exp0)" "$(want_layer "$g" $V; want_layer "$f" $V)" "qsd: exp0's layers"
# a snapshot the daemon refuses (exp1's overlay cannot be made) after livemerge formatted
# an empty device for exp0: the daemon has no HMP, so the host writes the zeros back
ovq=$(blk_loop ovq 32M)
before=$(state_of "$LM_SOCK")
lm_expect 1 snapshot "exp0=$ovq" "exp1=$T/no/such/dir/exp1.s1.qcow2"
grep -q "wiping .* on its host" "$T/lm.err" || it_fail "qsd: the refused snapshot: no wipe of $ovq on the host: $(lm_report)"
it_assert_eq "$(head -c $((4 * MIB)) "$ovq" | tr -d '\0' | wc -c)" 0 "qsd: non-zero bytes left on $ovq"
assert_state_unchanged "$LM_SOCK" "$before" "qsd: the refused snapshot"
nbd_write "$T/qs.nbd" disk0 0x32 $((4 * MIB)) $MIB
alloc=$(chain_json exp0 | jq -r '.chain[0].allocated')
((alloc > 2 * MIB)) || it_fail "qsd: top allocated $alloc after a write"
lm_ok --json commit exp0
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "qsd: commit result"
it_assert_eq "$(layers exp0 | cut -d' ' -f1-4)" "$f block $V $(blk_size "$f")" "qsd: exp0 after the commit"
stop_vm qs
blk_io qcow2 "$f" "read -P 0x30 0 1M" "read -P 0x31 1M 1M" "read -P 0x32 4M 1M"
compare qcow2 "$f" "$(ref qsd 0x30@0 0x31@1 0x32@4)"

it_pass
