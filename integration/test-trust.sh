#!/usr/bin/env bash
# test-trust: --delete on a real QEMU removes only what it checked on the host itself.
#
# One paused VM, six disks (chains X.0 <- X.1), all snapshotted onto X.s1, live writes
# through each device before and after every step:
#   - vda: commit --top X.1 --delete (intermediate) removes a.1; commit --delete (active)
#     removes a.s1;
#   - vdb: stream --delete removes b.1 and b.0;
#   - vdc: c.s1 (the active layer) is moved out of the images' directory and a symlink with
#     its name put in its place (QEMU keeps the file open): commit --delete exits 0, the
#     chain pivots, and "vdc: left c.s1: it is a symbolic link"; the link and its target stay;
#   - vdd: d.1 replaced by a symlink the same way: stream --delete --json exits 0, lists d.1
#     under "left" with the reason, still deletes d.0; the link stays, its target byte for byte;
#   - over ssh:// (a private sshd on 127.0.0.1, files checked over SFTP): vde commit --delete
#     removes e.s1; vdf with f.s1 replaced by a symlink: commit --delete --json lists it
#     under "left", the link and its target stay.
# Every write reads back live, and offline through each disk's final chain after quit.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source=integration/lib-ssh.sh
. "$IT_DIR/lib-ssh.sh"
lm_setup
ssh_setup
ssh_start sshd

SIZE=64M
I=$T/img
ELSE=$T/elsewhere
mkdir -p "$ELSE"
DISKS=(a b c d e f)
TOPS=()
for x in "${DISKS[@]}"; do
	TOPS+=("$(mk_chain "$I" "$x" 1 "$SIZE")")
	exp_chain "$x" 1
done
start_vm_blockdev vm "${TOPS[@]}"
LM_SOCK=$T/vm.qmp
TG=$(ssh_target "$LM_SOCK")
OPTS=(--known-hosts "$SSH_KH" -i "$SSH_DIR/id_client" -c "$TG")

# write_all PATTERN_BASE MIB: one live write into each disk (pattern base+index at MIB).
write_all() {
	local i=0 x
	for x in "${DISKS[@]}"; do
		live_write vm "vd$x" "$x" "$(printf '0x%02x' $(($1 + i)))" "$2M" 1M
		i=$((i + 1))
	done
}

# symlink_in_place FILE: move FILE to $ELSE and put a symlink to it under FILE's name.
symlink_in_place() {
	local f=$1 real
	real=$ELSE/$(basename "$f").real
	mv -- "$f" "$real"
	ln -s -- "$real" "$f"
}

# assert_symlink_kept FILE [REPORT]: FILE is still a symlink to $ELSE/BASENAME.real, which
# is still a qcow2 image (REPORT: lm_report, or lms_report after an ssh run).
assert_symlink_kept() {
	local f=$1 real
	real=$ELSE/$(basename "$f").real
	[[ -L $f ]] || it_fail "$f is no longer a symlink: $("${2:-lm_report}")"
	it_assert_eq "$(readlink -- "$f")" "$real" "target of the symlink $f"
	[[ -f $real ]] || it_fail "the symlink's target $real is gone"
	it_assert_eq "$(qemu-img info -U --output=json "$real" | jq -r .format)" qcow2 "format of $real"
}

# left_is FILE DISK: the --json result (in $T/lm.out) is ok with "left" exactly one entry
# for DISK's FILE saying it is a symbolic link.
left_is() {
	local res
	res=$(lm_result_json)
	it_assert_eq "$(jq -c .ok <<<"$res")" true "ok in the result"
	it_assert_eq "$(jq -c .left <<<"$res")" \
		"$(jq -nc --arg d "$2" --arg f "$1" '[{disk: $d, file: $f, why: "it is a symbolic link"}]')" \
		"left in the result"
}

write_all 0x20 8
args=()
for x in "${DISKS[@]}"; do args+=("vd$x=$I/$x.s1.qcow2"); done
lm_ok snapshot "${args[@]}"
write_all 0x30 16

# ---------------------------------------------------------------- removed when genuine
lm_ok commit vda --top "$I/a.1.qcow2" --delete
assert_chain vda "$I/a.s1.qcow2" "$I/a.0.qcow2"
assert_gone "$I/a.1.qcow2"
grep -qF "vda: deleted $I/a.1.qcow2" "$T/lm.err" || it_fail "intermediate commit: no deletion line: $(lm_report)"
live_write vm vda a 0x40 24M 1M
lm_ok commit vda --delete
assert_chain vda "$I/a.0.qcow2"
assert_gone "$I/a.s1.qcow2"
assert_exist "$I/a.0.qcow2"

lm_ok stream vdb --delete
assert_chain vdb "$I/b.s1.qcow2"
assert_gone "$I/b.1.qcow2" "$I/b.0.qcow2"
! grep -qF ': left ' "$T/lm.err" || it_fail "stream --delete left something: $(lm_report)"
it_log "commit --delete (intermediate, active) and stream --delete removed what left the chains"

# ---------------------------------------------------------------- a symlink is left
symlink_in_place "$I/c.s1.qcow2"
live_write vm vdc c 0x41 24M 1M # QEMU still writes into the file it holds
lm_ok commit vdc --delete
assert_chain vdc "$I/c.1.qcow2" "$I/c.0.qcow2"
assert_symlink_kept "$I/c.s1.qcow2"
grep -qxF "vdc: left $I/c.s1.qcow2: it is a symbolic link" "$T/lm.err" ||
	it_fail "commit of a symlinked top: no 'left' line: $(lm_report)"
it_log "vdc: $(grep -F 'left' "$T/lm.err")"

symlink_in_place "$I/d.1.qcow2"
sum=$(file_sum "$ELSE/d.1.qcow2.real")
lm_ok --json stream vdd --delete
assert_chain vdd "$I/d.s1.qcow2"
assert_symlink_kept "$I/d.1.qcow2"
it_assert_eq "$(file_sum "$ELSE/d.1.qcow2.real")" "$sum" "the symlinked layer's target after stream --delete"
left_is "$I/d.1.qcow2" vdd
assert_gone "$I/d.0.qcow2"
jq -se --arg m "vdd: deleted $I/d.0.qcow2" 'any(.[]; .type == "message" and .message == $m)' "$T/lm.out" >/dev/null ||
	it_fail "stream --delete: d.0 not reported deleted: $(lm_report)"

# ---------------------------------------------------------------- the same over ssh
lms_ok "${OPTS[@]}" commit vde --delete
assert_chain vde "$I/e.1.qcow2" "$I/e.0.qcow2"
assert_gone "$I/e.s1.qcow2"
grep -qF "vde: deleted $I/e.s1.qcow2" "$T/lm.err" || it_fail "commit --delete over ssh: no deletion line: $(lms_report)"

symlink_in_place "$I/f.s1.qcow2"
live_write vm vdf f 0x42 24M 1M
lms_ok "${OPTS[@]}" --json commit vdf --delete
assert_chain vdf "$I/f.1.qcow2" "$I/f.0.qcow2"
assert_symlink_kept "$I/f.s1.qcow2" lms_report
left_is "$I/f.s1.qcow2" vdf
it_log "over ssh: e.s1 deleted, the symlinked f.s1 left"

# ---------------------------------------------------------------- the data
write_all 0x50 32
live_check vm vda:a vdb:b vdc:c vdd:d vde:e vdf:f
stop_vm vm
# each final chain holds everything written through its device
declare -A FINAL=([a]=a.0 [b]=b.s1 [c]=c.1 [d]=d.s1 [e]=e.1 [f]=f.1)
for x in "${DISKS[@]}"; do
	check_offline "$x" "$I/${FINAL[$x]}.qcow2" "$SIZE"
done
it_pass
