#!/usr/bin/env bash
# test-check: `livemerge check` on real QEMU VMs (-blockdev), every finding code made by a
# real situation, and sound VMs that give none; check never changes a byte of any image or
# of the journal (sha256 of every file before and after each run on a sound VM), and every
# layer's data reads back with its pattern at the end.
#   vm1 (files): a snapshot and an active commit --delete through livemerge, then check: no
#       finding (text, and --json with --dir and a right --expect); the engine's stale view
#       from before the commit: expect-differs; a backing name rewritten in a backing
#       layer's header while the VM runs: backing-mismatch; a layer moved away: missing; a
#       snapshot taken by raw QMP after livemerge's commit: journal-differs; a stream started
#       by raw QMP under another job id: foreign-job.
#   vm2 (files): livemerge SIGKILLed right after journaling a snapshot's intent:
#       unfinished-operation; after recover, none; SIGKILLed right after journaling the
#       deletion of a committed layer (commit --delete): orphan (with --dir) and
#       unfinished-operation; after recover, none.
#   vm3 + vm4: a lazy-refcounts qcow2 whose QEMU was SIGKILLed after a write (its dirty bit
#       on disk), then used read-only as the backing layer of a new VM: dirty.
#   vm5: a qcow2 that qemu-io itself marked corrupt (a write its overlap check stopped),
#       used read-only as a backing layer: corrupt.
#   vm6 (loop devices, named by symlinks as logical volumes are): no finding, with --dir;
#       a spare volume in that directory: orphan.
#   over ssh:// (sshd on 127.0.0.1): vm6 again: no finding, then the orphan volume; vm1's
#       findings read through SFTP.
# it-timeout: 240
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-block.sh
. "$IT_DIR/lib-block.sh"
# shellcheck source-path=SCRIPTDIR source=lib-ssh.sh
. "$IT_DIR/lib-ssh.sh"
lm_setup
MIB=1048576

# sums FILE...: sha256 of each file and of every journal there is now, to prove check
# changed nothing
sums() {
	local -a js=()
	shopt -s nullglob
	js=("$T"/state/livemerge/*.journal)
	shopt -u nullglob
	sha256sum "$@" "${js[@]}" | sort
}

# check_clean [ARGS...]: check exits 0 with "no finding", and changes no image or journal
check_clean() {
	local before after
	before=$(sums "${CLEAN_FILES[@]}")
	lm_ok check "$@"
	after=$(sums "${CLEAN_FILES[@]}")
	it_assert_eq "$after" "$before" "check changed no file (check $*)"
}

# findings: the findings of the last --json check, "code disk layer" a line
findings() {
	jq -r 'select(.type == "finding") | "\(.code) \(.disk // "-") \(.layer // "-")"' "$T/lm.out"
}

# finding CODE: the last --json check's one finding with CODE (compact JSON)
finding() {
	jq -c --arg c "$1" 'select(.type == "finding" and .code == $c)' "$T/lm.out"
}

# summary: the last --json check's summary line
summary() {
	jq -c 'select(.type == "summary")' "$T/lm.out"
}

# header_backing_offset FILE: where a qcow2 header keeps its backing file name
header_backing_offset() {
	od -An -tu8 -j8 -N8 --endian=big "$1" | tr -d ' '
}

# incompat FILE: a qcow2 header's incompatible-feature bits (1 dirty, 2 corrupt)
incompat() {
	od -An -tu8 -j72 -N8 --endian=big "$1" | tr -d ' '
}

# ---------------------------------------------------------------- vm1: files, no finding
I1=$T/img/vm1
mkdir -p "$I1"
a=$(mk_chain "$I1" a 2 8M)
b=$(mk_chain "$I1" b 1 8M)
start_vm_blockdev vm1 "$a" "$b"
LM_SOCK=$T/vm1.qmp
lm_ok snapshot "vda=$I1/a.3.qcow2"
hmp_write "$LM_SOCK" vda 0x13 $((3 * MIB)) $MIB
lm_ok commit vda --delete
assert_gone "$I1/a.3.qcow2"
CLEAN_FILES=("$I1"/*.qcow2)
check_clean
grep -qx 'check: no finding (2 disks, 5 layers)' "$T/lm.out" || it_fail "vm1: check's summary: $(cat "$T/lm.out")"
files_json "$I1/a.2.qcow2" "$I1/a.1.qcow2" "$I1/a.0.qcow2" | jq -c --argjson b "$(files_json "$I1/b.1.qcow2" "$I1/b.0.qcow2")" '{vda: ., vdb: $b}' >"$T/right.json"
check_clean --json --dir "$I1" --expect "$T/right.json"
it_assert_eq "$(summary)" '{"type":"summary","findings":0,"disks":2,"layers":5,"codes":{}}' "vm1: --json summary"
check_clean vdb

# bad input: exit 2, one line, nothing read
lm_expect 2 check vdz
lm_one_line_error "no disk 'vdz'"
echo '{"vda": ["a.2.qcow2"]}' >"$T/bad.json"
lm_expect 2 check --expect "$T/bad.json"
lm_one_line_error "not an absolute path"
lm_expect 2 check --expect "$T/nonexistent.json"
lm_one_line_error "nonexistent.json"
lm_expect 2 check --dir "$T/no-such-dir"
lm_one_line_error "no-such-dir"
lm_expect 3 -c "$T/nobody.qmp" check
lm_one_line_error

# expect-differs: the engine still has the chain from before the commit
files_json "$I1/a.3.qcow2" "$I1/a.2.qcow2" "$I1/a.1.qcow2" "$I1/a.0.qcow2" | jq -c '{vda: .}' >"$T/stale.json"
lm_expect 1 --json check --expect "$T/stale.json"
it_assert_eq "$(findings)" "expect-differs vda -" "vm1: the stale view"
it_assert_eq "$(finding expect-differs | jq -c '[.live, .expect]')" \
	"[$(files_json "$I1/a.2.qcow2" "$I1/a.1.qcow2" "$I1/a.0.qcow2"),$(cat "$T/stale.json" | jq -c .vda)]" \
	"vm1: expect-differs says what each view holds"
lm_expect 1 check --expect "$T/stale.json"
grep -q "^expect-differs  *vda  *-  live: \[$I1/a.2.qcow2, $I1/a.1.qcow2, $I1/a.0.qcow2\]  expect: \[$I1/a.3.qcow2," "$T/lm.out" ||
	it_fail "vm1: the text line of expect-differs: $(cat "$T/lm.out")"
grep -qx 'check: 1 finding (expect-differs 1) on 2 disks, 5 layers' "$T/lm.out" || it_fail "vm1: text summary: $(cat "$T/lm.out")"

# backing-mismatch: a.1's header (a read-only backing layer of the running VM) rewritten to
# name x.0.qcow2, the same length, in place
off=$(header_backing_offset "$I1/a.1.qcow2")
printf '%s' "$I1/x.0.qcow2" | dd of="$I1/a.1.qcow2" bs=1 seek="$off" conv=notrunc status=none
it_assert_eq "$(image_backing "$I1/a.1.qcow2")" "$I1/x.0.qcow2" "vm1: the rewritten header"
lm_expect 1 --json check
it_assert_eq "$(findings)" "backing-mismatch vda $I1/a.1.qcow2" "vm1: the rewritten header"
it_assert_eq "$(finding backing-mismatch | jq -r '.live + " | " + .header')" \
	"$I1/a.0.qcow2 (qcow2) | $I1/x.0.qcow2 (qcow2)" "vm1: what the live graph and the header say"
printf '%s' "$I1/a.0.qcow2" | dd of="$I1/a.1.qcow2" bs=1 seek="$off" conv=notrunc status=none
check_clean

# missing: vdb's base moved away (QEMU keeps it open)
mv "$I1/b.0.qcow2" "$T/b.0.aside"
lm_expect 1 --json check
it_assert_eq "$(findings)" "missing vdb $I1/b.0.qcow2" "vm1: a layer gone"
it_assert_eq "$(finding missing | jq -r .host)" "no such file or device" "vm1: missing: the host"
mv "$T/b.0.aside" "$I1/b.0.qcow2"
check_clean

# journal-differs: a snapshot by raw QMP after livemerge's commit, which the journal knows
node=$(lm_node vda 0)
qmpq "$LM_SOCK" "$(jq -nc --arg n "$node" --arg f "$I1/raw.qcow2" \
	'{execute:"blockdev-snapshot-sync",arguments:{"node-name":$n,"snapshot-file":$f,"snapshot-node-name":"raw-top",format:"qcow2",mode:"absolute-paths"}}')" >/dev/null
lm_expect 1 --json check
it_assert_eq "$(findings)" "journal-differs vda -" "vm1: a snapshot the journal does not know"
it_assert_eq "$(finding journal-differs | jq -c '[.live[0], (.journal | length), ."journal-op"]')" \
	"[\"$I1/raw.qcow2\",3,\"commit, done\"]" "vm1: journal-differs says what each holds"

# foreign-job: a stream by raw QMP under an id of its own, held at 1 byte/s
qmpq "$LM_SOCK" '{"execute":"block-stream","arguments":{"job-id":"someone-else","device":"vdb-top","speed":1}}' >&2
lm_expect 1 --json check vdb
it_assert_eq "$(findings)" "foreign-job - -" "vm1: a job livemerge did not start"
it_assert_eq "$(finding foreign-job | jq -r .job)" "stream job someone-else, running" "vm1: foreign-job: the job"
qmpq "$LM_SOCK" '{"execute":"job-cancel","arguments":{"id":"someone-else"}}' >&2
n=100
while [[ $(qmpq "$LM_SOCK" '{"execute":"query-jobs"}' | jq -c '.return') != '[]' ]] && ((n-- > 0)); do sleep 0.1; done
CLEAN_FILES=("$I1"/*.qcow2)
check_clean vdb --dir "$I1" # the journal speaks of vda only; every file is in a chain
stop_vm vm1
qemu_io_check -r "$I1/raw.qcow2" "read -P 0x10 0 1M" "read -P 0x11 1M 1M" "read -P 0x12 2M 1M" "read -P 0x13 3M 1M"
verify_chain_data "$b" b 1

# ---------------------------------------------------------------- vm2: SIGKILLs
I2=$T/img/vm2
mkdir -p "$I2"
c=$(mk_chain "$I2" c 2 8M)
start_vm_blockdev vm2 "$c"
LM_SOCK=$T/vm2.qmp
# unfinished-operation: killed right after the snapshot's intent is on disk
LIVEMERGE_CRASH_AT=intent lm_expect 137 snapshot "vda=$I2/c.3.qcow2"
lm_expect 1 --json check
it_assert_eq "$(findings)" "unfinished-operation vda -" "vm2: killed after the intent"
it_assert_eq "$(finding unfinished-operation | jq -r .journal)" "snapshot begun, not finished; its last step: intent" \
	"vm2: unfinished-operation: the journal"
lm_ok recover
CLEAN_FILES=("$I2"/*.qcow2)
check_clean --dir "$I2"
# orphan: killed right after the deletion of the committed layer is journaled
LIVEMERGE_CRASH_AT=delete lm_expect 137 commit vda --delete
assert_exist "$I2/c.2.qcow2"
lm_expect 1 --json check --dir "$I2"
it_assert_eq "$(findings | sort)" "orphan - $I2/c.2.qcow2
unfinished-operation vda -" "vm2: killed during --delete"
it_assert_eq "$(finding orphan | jq -r .host)" "file, qcow2 backed by $I2/c.1.qcow2" "vm2: orphan: what the host has"
lm_expect 1 check --dir "$I2"
grep -q "^orphan  *-  *$I2/c.2.qcow2  live: in no chain  host: file, qcow2 backed by" "$T/lm.out" ||
	it_fail "vm2: the orphan's text line: $(cat "$T/lm.out")"
lm_ok recover
assert_gone "$I2/c.2.qcow2"
CLEAN_FILES=("$I2"/*.qcow2)
check_clean --dir "$I2"
stop_vm vm2
qemu_io_check -r "$I2/c.1.qcow2" "read -P 0x10 0 1M" "read -P 0x11 1M 1M" "read -P 0x12 2M 1M"

# ---------------------------------------------------------------- vm3, vm4: dirty
I3=$T/img/vm3
mkdir -p "$I3"
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$I3/d.0.qcow2" 8M
qemu_io_check "$I3/d.0.qcow2" "write -P 0x30 0 1M"
start_vm_blockdev vm3 "$I3/d.0.qcow2"
hmp_write "$T/vm3.qmp" vda 0x31 $((2 * MIB)) $MIB
read -r pid _ <"$T/vm3.pid"
kill -KILL "$pid"
it__wait_gone "$pid" 10 || it_fail "vm3 still runs after SIGKILL"
rm -f "$T/vm3.pid"
it_assert_eq "$(incompat "$I3/d.0.qcow2")" 1 "vm3: the dirty bit on disk after the SIGKILL"
qemu-img create -q -f qcow2 -u -b "$I3/d.0.qcow2" -F qcow2 "$I3/d.1.qcow2" 8M
start_vm_blockdev vm4 "$I3/d.1.qcow2"
LM_SOCK=$T/vm4.qmp
CLEAN_FILES=("$I3"/*.qcow2)
before=$(sums "${CLEAN_FILES[@]}")
lm_expect 1 --json check --dir "$I3"
it_assert_eq "$(findings)" "dirty vda $I3/d.0.qcow2" "vm4: a dirty backing layer"
it_assert_eq "$(sums "${CLEAN_FILES[@]}")" "$before" "vm4: check changed nothing"
it_assert_eq "$(incompat "$I3/d.0.qcow2")" 1 "vm4: the dirty bit stays (opened read-only)"
stop_vm vm4
qemu_io_check -r "$I3/d.1.qcow2" "read -P 0x30 0 1M"

# ---------------------------------------------------------------- vm5: corrupt
I5=$T/img/vm5
mkdir -p "$I5"
qemu-img create -q -f qcow2 "$I5/e.0.qcow2" 1G # data past the first L1 entry's 512 MiB too
qemu_io_check "$I5/e.0.qcow2" "write -P 0x50 768M 1M" "write -P 0x51 0 64k"
# L1[0] pointed at the refcount table's cluster: the next write's L2 update would overwrite
# it, and QEMU's overlap check marks the image corrupt instead
l1=$(od -An -tu8 -j40 -N8 --endian=big "$I5/e.0.qcow2" | tr -d ' ')
rt=$(od -An -tu8 -j48 -N8 --endian=big "$I5/e.0.qcow2" | tr -d ' ')
printf "$(printf '\\x%02x' $((0x80)) 0 0 0 $((rt >> 24 & 255)) $((rt >> 16 & 255)) $((rt >> 8 & 255)) $((rt & 255)))" |
	dd of="$I5/e.0.qcow2" bs=1 seek="$l1" conv=notrunc status=none
out=$(qemu-io -f qcow2 -c "write -P 0x52 0 512" "$I5/e.0.qcow2" 2>&1) || true
grep -q "Marking image as corrupt" <<<"$out" || it_fail "vm5: qemu-io did not mark the image corrupt: $out"
it_assert_eq "$(incompat "$I5/e.0.qcow2")" 2 "vm5: the corrupt bit on disk"
qemu-img create -q -f qcow2 -u -b "$I5/e.0.qcow2" -F qcow2 "$I5/e.1.qcow2" 1G
start_vm_blockdev vm5 "$I5/e.1.qcow2"
LM_SOCK=$T/vm5.qmp
before=$(sums "$I5"/*.qcow2)
lm_expect 1 --json check
it_assert_eq "$(findings)" "corrupt vda $I5/e.0.qcow2" "vm5: a corrupt backing layer"
it_assert_eq "$(finding corrupt | jq -r '.header + " | " + .live')" "corrupt bit set | open read-only" "vm5: what corrupt says"
it_assert_eq "$(sums "$I5"/*.qcow2)" "$before" "vm5: check changed nothing"
stop_vm vm5
qemu_io_check -r "$I5/e.1.qcow2" "read -P 0x50 768M 1M"

# ---------------------------------------------------------------- vm6: block devices
if blk_setup; then
	V=$T/vols
	mkdir -p "$V"
	ln -s "$(blk_loop base 16M)" "$V/base"
	ln -s "$(blk_loop top 16M)" "$V/top"
	ln -s "$(blk_loop spare 16M)" "$V/spare"
	blk_io raw "$V/base" "write -P 0x60 0 1M"
	qemu-img create -q -f qcow2 -b "$V/base" -F raw "$V/top" 16M
	blk_io qcow2 "$V/top" "write -P 0x61 1M 1M"
	it__launch vm6 "$T/vm6.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults \
		-display none -qmp "unix:$T/vm6.qmp,server=on,wait=off" \
		-blockdev "driver=host_device,filename=$V/top,node-name=vda-file" \
		-blockdev "driver=qcow2,file=vda-file,node-name=vda-top" \
		-device "virtio-blk-pci,drive=vda-top,id=vda"
	LM_SOCK=$T/vm6.qmp
	lm_ok --json chain vda
	it_assert_eq "$(jq -r '[.chain[].type] | join(" ")' "$T/lm.out")" "block block" "vm6: the layers are block devices"
	CLEAN_FILES=("$V/top" "$V/base")
	check_clean
	lm_expect 1 --json check --dir "$V"
	it_assert_eq "$(findings)" "orphan - $V/spare" "vm6: a volume in no chain"
	it_assert_eq "$(finding orphan | jq -r .host)" "block device, no image header" "vm6: the orphan volume"
	mv "$V/spare" "$T/spare.link"
	check_clean --dir "$V"
	mv "$T/spare.link" "$V/spare"
fi

# ---------------------------------------------------------------- over ssh://
ssh_setup
ssh_start sshd
SSHO=(-i "$SSH_DIR/id_client" --known-hosts "$SSH_KH")
if [[ -S $T/vm6.qmp ]]; then
	lms "${SSHO[@]}" -c "$(ssh_target "$T/vm6.qmp")" --json check --dir "$V"
	((LMS_RC == 1)) || it_fail "ssh: vm6: expected exit 1: $(lms_report)"
	it_assert_eq "$(findings)" "orphan - $V/spare" "ssh: vm6: the orphan volume, listed over SFTP"
	mv "$V/spare" "$T/spare.link"
	before=$(sums "${CLEAN_FILES[@]}")
	lms_ok "${SSHO[@]}" -c "$(ssh_target "$T/vm6.qmp")" check --dir "$V"
	grep -qx 'check: no finding (1 disk, 2 layers)' "$T/lm.out" || it_fail "ssh: vm6: $(cat "$T/lm.out")"
	it_assert_eq "$(sums "${CLEAN_FILES[@]}")" "$before" "ssh: vm6: check changed nothing"
	mv "$T/spare.link" "$V/spare"
	stop_vm vm6
	blk_io qcow2 "$V/top" "read -P 0x60 0 1M" "read -P 0x61 1M 1M"
fi
# a file VM over ssh: a backing name rewritten and an orphan, read on the host through SFTP,
# then through the shell alone (no sftp subsystem)
start_vm_blockdev vm7 "$I2/c.1.qcow2"
cp "$I2/c.1.qcow2" "$I2/copy.qcow2"
off=$(header_backing_offset "$I2/c.1.qcow2")
lms "${SSHO[@]}" -c "$(ssh_target "$T/vm7.qmp")" --journal "$T/state/ssh" --json check --dir "$I2"
((LMS_RC == 1)) || it_fail "ssh: vm7: expected exit 1: $(lms_report)"
it_assert_eq "$(findings)" "orphan - $I2/copy.qcow2" "ssh: vm7: over SFTP"
printf '%s' "$I2/x.0.qcow2" | dd of="$I2/c.1.qcow2" bs=1 seek="$off" conv=notrunc status=none
ssh_stop sshd
SSH_SFTP=0 ssh_start nosftp
lms "${SSHO[@]}" -c "$(ssh_target "$T/vm7.qmp")" --journal "$T/state/ssh" --json check --dir "$I2"
((LMS_RC == 1)) || it_fail "ssh: vm7 (shell): expected exit 1: $(lms_report)"
it_assert_eq "$(findings)" "backing-mismatch vda $I2/c.1.qcow2
orphan - $I2/copy.qcow2" "ssh: vm7: through the shell"
printf '%s' "$I2/c.0.qcow2" | dd of="$I2/c.1.qcow2" bs=1 seek="$off" conv=notrunc status=none
rm "$I2/copy.qcow2"
lms_ok "${SSHO[@]}" -c "$(ssh_target "$T/vm7.qmp")" --journal "$T/state/ssh" check --dir "$I2"
stop_vm vm7
qemu_io_check -r "$I2/c.1.qcow2" "read -P 0x10 0 1M" "read -P 0x11 1M 1M" "read -P 0x12 2M 1M"
it_pass
