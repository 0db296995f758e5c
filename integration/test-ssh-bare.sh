#!/usr/bin/env bash
# test-ssh-bare: livemerge over ssh:// against hosts that offer nothing but sshd with
# stream-local forwarding, as hardened hosts do.
#
# 1. sshd without the sftp subsystem (exec allowed): overlay checks and --delete go through
#    an exec channel; an existing overlay is refused (exit 2, the host named, the file as it
#    was); commit --delete removes the layer on the host.
# 2. sshd without sftp and with ForceCommand /bin/false (no exec either): whether an overlay
#    exists is asked of QEMU (a read-only probe node); an existing one is still refused;
#    chain, snapshot, commit, stream, jobs, recover and batch work; --delete leaves the
#    files, says which and why (a line each, "left" in the JSON result) and exits 0.
# Live writes between the steps; every layer's data read back offline at the end.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-ssh.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-ssh.sh"
it_setup
it_require_lm
ssh_setup

mkdir "$T/img"
TOPS=()
for i in 0 1; do
	TOPS+=("$(mk_chain "$T/img" "d$i" 2 64M)")
done
start_vm_blockdev vm "${TOPS[@]}"
TG=$(ssh_target "$T/vm.qmp")
OPTS=(-c "$TG" --known-hosts "$SSH_KH" -i "$SSH_DIR/id_client")

# expect_rc RC WHAT: the last lms ended with RC.
expect_rc() {
	((LMS_RC == $1)) || it_fail "$2: expected exit $1: $(lms_report)"
}

# chain_of DISK: the disk's chain as livemerge reads it over ssh, files active first.
chain_of() {
	lms "${OPTS[@]}" --json chain "$1"
	expect_rc 0 "chain $1"
	jq -c '[.chain[].filename]' "$T/lm.out"
}

# ---------------------------------------------------------------- 1. no sftp, exec allowed
SSH_SFTP=0 ssh_start nosftp
EXIST=$T/img/exists.qcow2
qemu-img create -q -f qcow2 "$EXIST" 1M
sum=$(sha256sum <"$EXIST")
lms "${OPTS[@]}" snapshot "vda=$EXIST"
expect_rc 2 "no sftp: snapshot onto an existing file"
grep -q 'exists already on' "$T/lm.err" || it_fail "no sftp: the refusal does not say the overlay exists: $(lms_report)"
it_assert_eq "$(sha256sum <"$EXIST")" "$sum" "no sftp: the existing file after the refusal"

hmp_write "$T/vm.qmp" vda 0x51 8M 1M
lms "${OPTS[@]}" snapshot "vda=$T/img/a.s1.qcow2" "vdb=$T/img/b.s1.qcow2"
expect_rc 0 "no sftp: snapshot"
hmp_write "$T/vm.qmp" vda 0x52 9M 1M
lms "${OPTS[@]}" --json commit vda --delete
expect_rc 0 "no sftp: commit --delete"
[[ ! -e $T/img/a.s1.qcow2 ]] || it_fail "no sftp: commit --delete left a.s1.qcow2 (exec rm expected): $(lms_report)"
[[ $(jq -c 'select(.type == "result") | .left // []' "$T/lm.out") == "[]" ]] ||
	it_fail "no sftp: the result lists files left: $(lms_report)"
ssh_stop nosftp

# ---------------------------------------------------------------- 2. no sftp, no exec
SSH_SFTP=0 ssh_start bare "ForceCommand /bin/false"
lms "${OPTS[@]}" snapshot "vda=$EXIST"
expect_rc 2 "bare: snapshot onto an existing file"
grep -q 'exists already on' "$T/lm.err" || it_fail "bare: the refusal does not say the overlay exists: $(lms_report)"
it_assert_eq "$(sha256sum <"$EXIST")" "$sum" "bare: the existing file after the refusal"
it_assert_eq "$(qmp_raw "$T/vm.qmp" '{"execute":"query-named-block-nodes"}' | jq -r '[.return[]."node-name" | select(startswith("lm-probe"))] | length')" \
	0 "bare: probe nodes left in QEMU"

lms "${OPTS[@]}" jobs
expect_rc 0 "bare: jobs"
lms "${OPTS[@]}" recover
expect_rc 0 "bare: recover"

hmp_write "$T/vm.qmp" vda 0x53 10M 1M
lms "${OPTS[@]}" snapshot "vda=$T/img/a.s2.qcow2" "vdb=$T/img/b.s2.qcow2"
expect_rc 0 "bare: snapshot"
it_assert_eq "$(chain_of vda | jq -r '.[0]')" "$T/img/a.s2.qcow2" "bare: vda's active layer after the snapshot"
hmp_write "$T/vm.qmp" vda 0x54 11M 1M
hmp_write "$T/vm.qmp" vdb 0x55 11M 1M

before_b=$(chain_of vdb)
lms "${OPTS[@]}" --json stream vdb --delete
expect_rc 0 "bare: stream --delete"
left=$(jq -c 'select(.type == "result") | [.left[].file]' "$T/lm.out")
want=$(jq -c '.[1:]' <<<"$before_b") # a stream without --base flattens: every layer below goes
it_assert_eq "$left" "$want" "bare: stream --delete: the files left"
while read -r f; do
	[[ -f $f ]] || it_fail "bare: $f was deleted though the host offers no way to"
done < <(jq -r '.[]' <<<"$left")
jq -r 'select(.type == "result") | .left[].why' "$T/lm.out" | grep -qv 'sftp\|exec\|SFTP' &&
	it_fail "bare: a reason does not name what the host lacks: $(jq -c 'select(.type == "result") | .left' "$T/lm.out")"

lms "${OPTS[@]}" commit vda --delete
expect_rc 0 "bare: commit --delete"
grep -q "left $T/img/a.s2.qcow2" "$T/lm.err" || it_fail "bare: commit --delete does not say a.s2.qcow2 is left: $(lms_report)"
[[ -f $T/img/a.s2.qcow2 ]] || it_fail "bare: a.s2.qcow2 is gone"

# batch: one VM through the bare host
cat >"$T/plan.json" <<EOF
{"defaults": {"known-hosts": "$SSH_KH", "identity": ["$SSH_DIR/id_client"]},
 "vms": [{"target": "$TG", "verb": "snapshot", "args": ["vda=$T/img/a.s3.qcow2"]}]}
EOF
lms --json batch "$T/plan.json"
expect_rc 0 "bare: batch snapshot"
it_assert_eq "$(chain_of vda | jq -r '.[0]')" "$T/img/a.s3.qcow2" "bare: vda's active layer after the batch"
hmp_write "$T/vm.qmp" vda 0x56 12M 1M

# ---------------------------------------------------------------- the data, offline
final_a=$(chain_of vda | jq -r '.[0]')
final_b=$(chain_of vdb | jq -r '.[0]')
stop_vm vm
for x in "0x51 8M" "0x52 9M" "0x53 10M" "0x54 11M" "0x56 12M"; do
	read -r pat off <<<"$x"
	qemu_io_check -r "$final_a" "read -P $pat $off 1M"
done
qemu_io_check -r "$final_b" "read -P 0x55 11M 1M"
for i in 0 1 2; do
	qemu_io_check -r "$final_a" "read -P $(chain_pattern "$i") $((i * IT_MIB)) $IT_MIB"
	qemu_io_check -r "$final_b" "read -P $(chain_pattern "$i") $((i * IT_MIB)) $IT_MIB"
done
it_pass
