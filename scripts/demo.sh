#!/usr/bin/env bash
# make demo: a live snapshot and merge of two disks of a running QEMU, with
# every byte checked. Starts the VM itself, cleans up after itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
LM=$root/build/livemerge
T=$(mktemp -d /tmp/livemerge-demo.XXXXXX)
qpid=
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "two 256 MiB disks on base images with known data"
for d in vda vdb; do
	qemu-img create -q -f qcow2 "$T/$d.base.qcow2" 256M
	qemu-io -c "write -P 0x11 0 64M" "$T/$d.base.qcow2" >/dev/null
	echo "$d.base.qcow2: 0x11 at [0, 64M)"
done

step "start QEMU (q35, TCG, paused) with the disks as virtio-blk devices"
qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none \
	-qmp "unix:$T/qmp.sock,server=on,wait=off" \
	-blockdev "driver=file,filename=$T/vda.base.qcow2,node-name=vda-file" \
	-blockdev "driver=qcow2,file=vda-file,node-name=vda-base" \
	-device virtio-blk-pci,drive=vda-base,id=vda \
	-blockdev "driver=file,filename=$T/vdb.base.qcow2,node-name=vdb-file" \
	-blockdev "driver=qcow2,file=vdb-file,node-name=vdb-base" \
	-device virtio-blk-pci,drive=vdb-base,id=vdb >"$T/qemu.out" 2>&1 &
qpid=$!
for _ in $(seq 100); do [ -S "$T/qmp.sock" ] && break; sleep 0.1; done
export LIVEMERGE_CONNECT=unix:$T/qmp.sock
export XDG_STATE_HOME=$T/state # the journal lives and goes with the demo
run "$LM" chain

step "live snapshot of both disks in one transaction"
run "$LM" snapshot vda="$T/vda.s1.qcow2" vdb="$T/vdb.s1.qcow2"

step "the guest writes new data: it lands in the overlays"
for d in vda vdb; do
	"$LM" qmp human-monitor-command \
		"{\"command-line\":\"qemu-io -d /machine/peripheral/$d/virtio-backend \\\"write -P 0x22 32M 64M\\\"\"}" >/dev/null
	echo "$d: 0x22 at [32M, 96M) through the device's own backend"
done
run "$LM" chain

step "commit both back and pivot, all or none (at 32 MiB/s to show progress)"
run "$LM" commit vda vdb --speed 32M --delete

step "verify every byte"
"$LM" qmp quit >/dev/null
wait "$qpid" || true
qpid=
for d in vda vdb; do
	out=$(qemu-io -r -f qcow2 -c "read -P 0x11 0 32M" -c "read -P 0x22 32M 64M" \
		-c "read -P 0 96M 160M" "$T/$d.base.qcow2")
	if grep -q "verification failed" <<<"$out"; then
		echo "$d: DATA MISMATCH"; echo "$out"; exit 1
	fi
	# an independent reference image, compared byte for byte
	qemu-img create -q -f raw "$T/ref.raw" 256M
	qemu-io -f raw -c "write -P 0x11 0 32M" -c "write -P 0x22 32M 64M" "$T/ref.raw" >/dev/null
	qemu-img compare -q -f qcow2 -F raw "$T/$d.base.qcow2" "$T/ref.raw"
	[ ! -e "$T/$d.s1.qcow2" ] || { echo "$d.s1.qcow2 was not deleted"; exit 1; }
	echo "$d: 0x11 [0,32M) 0x22 [32M,96M) zero [96M,256M): identical to the reference"
done
step "demo passed"
