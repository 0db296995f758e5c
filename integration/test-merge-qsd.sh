#!/usr/bin/env bash
# test-merge-qsd: the core sequence on qemu-storage-daemon, two disks (chains of depth 1 and
# 2) exported writable over NBD; qsd has no devices, so a disk is named by its top node name:
#   snapshot disk0 disk1 -> exit 0; the export follows the new top (its node name is the
#     overlay's); writes through the NBD export land in the overlays
#   active commit of both (named by the overlays' node names) --delete -> both pivot back,
#     the overlays are removed; the NBD exports keep working: write and read through them
#   stream both (flatten) -> single-layer chains; NBD still works
# Data is read back through NBD after every step and offline after qsd stops (read -P,
# qemu-img compare against a raw reference).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
lm_setup

SIZE=64M
I=$T/img
x=$(mk_chain "$I" x 1 $SIZE)
y=$(mk_chain "$I" y 2 $SIZE)
exp_chain x 1
exp_chain y 2
start_qsd qs "$x" "$y"
LM_SOCK=$T/qs.qmp

# export_nodes: "exp0=NODE exp1=NODE" as QEMU has them.
export_nodes() {
	qmpq "$LM_SOCK" '{"execute":"query-block-exports"}' | jq -r '[.return[] | "\(.id)=\(."node-name")"] | sort | join(" ")'
}

live_write_nbd x disk0 0x71 8M 1M
live_write_nbd y disk1 0x81 8M 1M
live_check_nbd x disk0
live_check_nbd y disk1

# ---- snapshot
ov0=$I/x.s.qcow2
ov1=$I/y.s.qcow2
lm_ok --json snapshot "disk0=$ov0" "disk1=$ov1"
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "qsd: snapshot result"
n0=$(lm_result_json | jq -r --arg f "$ov0" '.disks[] | select(.chain[0].filename == $f) | .chain[0]."node-name"')
n1=$(lm_result_json | jq -r --arg f "$ov1" '.disks[] | select(.chain[0].filename == $f) | .chain[0]."node-name"')
[[ -n $n0 && -n $n1 ]] || it_fail "qsd: the snapshot result lacks the overlays' nodes: $(lm_result_json)"
it_assert_eq "$(export_nodes)" "exp0=$n0 exp1=$n1" "qsd: exports after the snapshot"
assert_chain "$n0" "$ov0" "$x" "$I/x.0.qcow2"
assert_chain "$n1" "$ov1" "$y" "$I/y.1.qcow2" "$I/y.0.qcow2"
live_write_nbd x disk0 0x72 9M 2M
live_write_nbd y disk1 0x82 9M 2M
live_check_nbd x disk0
live_check_nbd y disk1

# ---- active commit, --delete
lm_ok --json commit "$n0" "$n1" --delete
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "qsd: commit result"
it_assert_eq "$(export_nodes)" "exp0=disk0 exp1=disk1" "qsd: exports after the commit"
assert_chain disk0 "$x" "$I/x.0.qcow2"
assert_chain disk1 "$y" "$I/y.1.qcow2" "$I/y.0.qcow2"
assert_gone "$ov0" "$ov1"
assert_no_jobs "$LM_SOCK" "qsd: commit"
live_write_nbd x disk0 0x73 11M 1M
live_write_nbd y disk1 0x83 11M 1M
live_check_nbd x disk0
live_check_nbd y disk1

# ---- stream (flatten)
lm_ok --json stream disk0 disk1
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "qsd: stream result"
assert_chain disk0 "$x"
assert_chain disk1 "$y"
assert_no_jobs "$LM_SOCK" "qsd: stream"
live_write_nbd x disk0 0x74 12M 1M
live_write_nbd y disk1 0x84 12M 1M
live_check_nbd x disk0
live_check_nbd y disk1

stop_vm qs
check_offline x "$x" $SIZE
check_offline y "$y" $SIZE
it_pass
