#!/usr/bin/env bash
# test-block-marks: while a job runs, a block-device layer that receives writes is kept ahead
# of them (QEMU's write threshold, no polling): a stream pulls 6 MiB of a file base up into
# an active layer on an 8 MiB volume with --chunk 8M --headroom 6M: the threshold (2 MiB) is
# crossed, the volume grows by a chunk (examples/volume-loop) and the threshold is armed
# again; the job ends, the VM never stopped, the data reads back.
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
blk_volumes

qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
blk_io qcow2 "$T/base.qcow2" "write -P 0x60 0 6M"
"$VCMD" create "$T/v/top" $((8 * MIB)) || it_fail "volume-loop create top"
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/v/top" 64M
blk_io qcow2 "$T/v/top" "write -P 0x61 8M 512k"
it__launch vm "$T/vm.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
	-display none -qmp "unix:$T/vm.qmp,server=on,wait=off" \
	-blockdev "driver=host_device,filename=$T/v/top,node-name=vda-file" \
	-blockdev "driver=qcow2,file=vda-file,node-name=vda-top" \
	-device "virtio-blk-pci,drive=vda-top,id=vda"
LM_SOCK=$T/vm.qmp
size0=$(blk_size "$(readlink "$T/v/top")")

lm_ok --json stream vda --volume-cmd "$VCMD" --chunk 8M --headroom 6M
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "the stream"
grep -q "grew $T/v/top from $size0" "$T/lm.out" "$T/lm.err" ||
	it_fail "the active layer was not grown while the stream ran: $(lm_report)"
size1=$(blk_size "$(readlink "$T/v/top")")
((size1 >= size0 + 8 * MIB)) || it_fail "the volume is $size1 bytes after the stream (was $size0)"
assert_chain vda "$T/v/top"
it_assert_eq "$(qmpq "$LM_SOCK" '{"execute":"query-status"}' | jq -r .return.status)" prelaunch "the VM's state"
hmp_write "$T/vm.qmp" vda 0x62 $((12 * MIB)) $MIB
stop_vm vm
blk_io qcow2 "$T/v/top" "read -P 0x60 0 6M" "read -P 0x61 8M 512k" "read -P 0x62 12M 1M"
out=$(qemu-img check -f qcow2 "$T/v/top" 2>&1) || it_fail "qemu-img check: $out"
it_pass
