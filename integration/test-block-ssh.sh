#!/usr/bin/env bash
# test-block-ssh: block volumes on a VM reached over ssh:// (a private sshd on 127.0.0.1): the
# volume command runs on that host through an exec channel of the VM's SSH session, the
# device checks go through the session too.
#   vda: a 4M qcow2 base volume <- a 16M layer volume (the active layer at start)
# 1. snapshot onto a volume that does not exist yet: created on the host, formatted through
#    QMP, put on top; a live write lands in it
# 2. intermediate commit of the 16M layer into the 4M base: the base is grown on the host
#    first, then merged; the chain checked over ssh and in QEMU
# 3. sshd without the sftp subsystem (SSH_SFTP=0): a snapshot onto a device and a refusal
#    of one holding data, checked through the shell alone
# 4. watch over ssh: the guest writes past the threshold of the active volume; watch grows
#    it on the host through the session; SIGTERM ends it with 0
# Every layer's data read back offline at the end.
# it-timeout: 300
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source=integration/lib-ssh.sh
. "$IT_DIR/lib-ssh.sh"
# shellcheck source=integration/lib-block.sh
. "$IT_DIR/lib-block.sh"
lm_setup
ssh_setup
if ! blk_setup; then
	it_pass
fi
MIB=1048576
mkdir -p "$T/vols" "$T/v"
# the host's shell does not get our environment: a wrapper names the volumes' directory
VCMD=$T/vcmd
printf '#!/bin/sh\nLM_LOOP_DIR=%s exec %s "$@"\n' "$T/vols" "$IT_ROOT/examples/volume-loop" >"$VCMD"
chmod +x "$VCMD"
it_on_exit "for l in $T/v/*; do [ -L \"\$l\" ] && $VCMD remove \"\$l\"; done; true"

"$VCMD" create "$T/v/b0" $((4 * MIB)) || it_fail "volume-loop create b0"
qemu-img create -q -f qcow2 "$T/v/b0" 64M
blk_io qcow2 "$T/v/b0" "write -P 0x50 0 512k"
"$VCMD" create "$T/v/l1" $((16 * MIB)) || it_fail "volume-loop create l1"
qemu-img create -q -f qcow2 -b "$T/v/b0" -F qcow2 "$T/v/l1" 64M
blk_io qcow2 "$T/v/l1" "write -P 0x51 2M 4M"
it__launch vm "$T/vm.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
	-display none -qmp "unix:$T/vm.qmp,server=on,wait=off" \
	-qmp "unix:$T/mon2.qmp,server=on,wait=off" \
	-blockdev "driver=host_device,filename=$T/v/l1,node-name=vda-file" \
	-blockdev "driver=qcow2,file=vda-file,node-name=vda-top" \
	-device "virtio-blk-pci,drive=vda-top,id=vda"
LM_SOCK=$T/vm.qmp
TG=$(ssh_target "$T/vm.qmp")
OPTS=(-c "$TG" --known-hosts "$SSH_KH" -i "$SSH_DIR/id_client")

# ---------------------------------------------------------------- 1. snapshot onto a new volume
ssh_start sshd
lms_ok "${OPTS[@]}" --json snapshot "vda=$T/v/s1" --volume-cmd "$VCMD" --initial-size 16M
[[ -L $T/v/s1 && -b $T/v/s1 ]] || it_fail "no volume made on the host at $T/v/s1: $(lms_report)"
assert_chain vda "$T/v/s1" "$T/v/l1" "$T/v/b0"
hmp_write "$T/vm.qmp" vda 0x52 $((8 * MIB)) $MIB

# ---------------------------------------------------------------- 2. commit into the small base
size_b0=$(blk_size "$(readlink "$T/v/b0")")
lms_ok "${OPTS[@]}" --json commit vda --top "$T/v/l1" --base "$T/v/b0" --volume-cmd "$VCMD"
(($(blk_size "$(readlink "$T/v/b0")") > size_b0)) || it_fail "the base was not grown on the host: $(lms_report)"
assert_chain vda "$T/v/s1" "$T/v/b0"
# the grown base's size as the host has it now, asked over the session (QEMU keeps the old)
lms_ok "${OPTS[@]}" --json chain vda
it_assert_eq "$(jq -r '.chain[1].size' "$T/lm.out")" "$(blk_size "$(readlink "$T/v/b0")")" \
	"chain over ssh: the grown base's size"
hmp_write "$T/vm.qmp" vda 0x53 $((9 * MIB)) $MIB
ssh_stop sshd

# ---------------------------------------------------------------- 3. no sftp subsystem
SSH_SFTP=0 ssh_start nosftp
ov2=$(blk_loop ov2 32M)
lms_ok "${OPTS[@]}" --json snapshot "vda=$ov2"
assert_chain vda "$ov2" "$T/v/s1" "$T/v/b0"
hmp_write "$T/vm.qmp" vda 0x54 $((10 * MIB)) $MIB
rnd=$(blk_loop rnd 32M)
head -c $MIB /dev/urandom | dd of="$rnd" bs=1M conv=notrunc status=none
sum=$(head -c $MIB "$rnd" | sha256sum)
lms "${OPTS[@]}" snapshot "vda=$rnd"
((LMS_RC == 2)) || it_fail "no sftp: a device holding data was not refused: $(lms_report)"
it_assert_eq "$(head -c $MIB "$rnd" | sha256sum)" "$sum" "no sftp: the refused device's first MiB"
ssh_stop nosftp

# ---------------------------------------------------------------- 4. watch over ssh
# the guest's writes (HMP qemu-io through a second monitor: watch holds the first) pass the
# threshold of the active 8 MiB volume; watch grows it on the host through the session
ssh_start watchd
"$VCMD" create "$T/v/w1" $((8 * MIB)) || it_fail "volume-loop create w1"
lms_ok "${OPTS[@]}" snapshot "vda=$T/v/w1"
ln -s "$T/vm.out" "$T/mon2.out" # hmp_write reads qemu-io's answers in SOCK.out
size_w=$(blk_size "$(readlink "$T/v/w1")")
timeout -k 5 120 "$LM" "${OPTS[@]}" --json watch vda --volume-cmd "$VCMD" --chunk 8M --headroom 6M \
	>"$T/watch.out" 2>"$T/watch.err" &
wpid=$!
n=200
while ! grep -q . "$T/watch.err" "$T/watch.out" 2>/dev/null && ((n-- > 0)); do sleep 0.05; done
sleep 1
hmp_write "$T/mon2.qmp" vda 0x55 $((20 * MIB)) $((4 * MIB))
n=200
while ! grep -q '"to"' "$T/watch.out" && ((n-- > 0)); do sleep 0.05; done
kill -TERM "$wpid"
wait "$wpid" || it_fail "watch over ssh did not exit 0 on SIGTERM: $(head -n 3 "$T/watch.err")"
grep -q '"to"' "$T/watch.out" || it_fail "watch over ssh extended nothing: $(head -n 3 "$T/watch.err")"
(($(blk_size "$(readlink "$T/v/w1")") > size_w)) || it_fail "watch over ssh: the volume did not grow"
ssh_stop watchd

# ---------------------------------------------------------------- the data, offline
stop_vm vm
blk_io qcow2 "$T/v/w1" "read -P 0x50 0 512k" "read -P 0x51 2M 4M" "read -P 0x52 8M 1M" \
	"read -P 0x53 9M 1M" "read -P 0x54 10M 1M" "read -P 0x55 20M 4M"
blk_io qcow2 "$T/v/b0" "read -P 0x50 0 512k" "read -P 0x51 2M 4M"
out=$(qemu-img check -f qcow2 "$T/v/b0" 2>&1) || it_fail "qemu-img check of the grown base: $out"
it_pass
