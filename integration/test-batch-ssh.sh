#!/usr/bin/env bash
# test-batch-ssh: livemerge batch on four qemu-storage-daemon "VMs" reached as
# ssh://root@127.0.0.1:PORT/PATH through the test's own sshd (lib-ssh.sh: own host key,
# known_hosts, client key; HOME without keys, no agent). The ssh settings come only from the
# plan's defaults ("known-hosts", "identity": a key sshd refuses, then the right one); there
# is no -i or --known-hosts on the command line.
#   1. snapshot batch of the four (both disks each), --parallel 2: exit 0, 4/4/0; chains
#      (livemerge --json chain and QEMU) have the overlays; writes through NBD land there
#   2. commit batch of the four (exp0 exp1): exit 0, chains back, every byte through NBD
#   3. snapshot batch of the four plus one entry whose socket does not exist on the "remote":
#      that entry's vm line says outcome 3 (and names the socket), the four succeed: exit 1
#   Each batch is exactly one SSH session: one client authenticating and one "Accepted
#   publickey" in sshd's log, for id_client, after sshd refused id_wrong on that session. Batch 2 runs with --parallel 1: one VM after another, so
#   nothing but the batch itself can keep the session between VMs. At the end the qsds stop and every disk is read back offline (every byte).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-ssh.sh
. "$IT_DIR/lib-ssh.sh"
# shellcheck source-path=SCRIPTDIR source=lib-batch.sh
. "$IT_DIR/lib-batch.sh"
lm_setup
ssh_setup
ssh_start sshd

VMS=(vm0 vm1 vm2 vm3)
for i in "${!VMS[@]}"; do
	bt_start "${VMS[$i]}" "$i"
done
J=$T/j
HEAD=$(jq -nc --arg j "$J" --arg kh "$SSH_KH" --arg wrong "$SSH_DIR/id_wrong" --arg id "$SSH_DIR/id_client" \
	'{parallel: 16, defaults: {journal: $j, "known-hosts": $kh, identity: [$wrong, $id]}}')
[[ ! -e $HOME/.ssh/known_hosts && -z $(ls -A "$HOME/.ssh") && -z ${SSH_AUTH_SOCK:-} ]] ||
	it_fail "HOME=$HOME must hold no ssh keys or known_hosts, and no agent be set"

snap() { # snap VM TAG: snapshot of both disks of VM over ssh, overlays VM-dD.TAG.qcow2
	bt_vm "$(ssh_target "$T/$1.qmp")" snapshot "exp0=$T/img/$1-d0.$2.qcow2" "exp1=$T/img/$1-d1.$2.qcow2"
}

# one_session CMD...: run CMD (a bt_batch); meanwhile sshd must see exactly one SSH session:
# one client that tried a key and one accepted session (the whole batch shares one session).
# Counted by the client ports in sshd's publickey lines, so the TCP probe ssh_start made (it
# never gets to authentication, and sshd may log it late) does not count. That session must
# have offered the plan's first identity (id_wrong) and been refused it ("Failed publickey"
# with its fingerprint), then been accepted with the second (id_client), from the same client
# port. A problem is recorded (reported at the end, so the data checks still run).
SESSION_PROBLEMS=()
FP_WRONG=$(ssh_fingerprint "$SSH_DIR/id_wrong.pub")
FP_CLIENT=$(ssh_fingerprint "$SSH_DIR/id_client.pub")
[[ $FP_WRONG == SHA256:* && $FP_CLIENT == SHA256:* ]] || it_fail "key fingerprints: '$FP_WRONG' '$FP_CLIENT'"
one_session() {
	local acc0 ports0 acc ports lines0 new port
	acc0=$(ssh_accepted sshd)
	ports0=$(auth_ports)
	lines0=$(wc -l <"$T/sshd.log")
	"$@"
	acc=$(($(ssh_accepted sshd) - acc0))
	ports=$(($(auth_ports) - ports0))
	# (sshd -e ends its lines with \r\n)
	new=$(tail -n +$((lines0 + 1)) "$T/sshd.log" | tr -d '\r')
	# (awk, not a regex: a fingerprint holds / and +)
	port=$(awk -v fp="$FP_CLIENT" '$1 == "Accepted" && $2 == "publickey" && $4 == "root" && $7 == "port" &&
		$(NF - 1) == "ED25519" && $NF == fp { print $8 }' <<<"$new")
	if [[ $ports/$acc != 1/1 ]]; then
		SESSION_PROBLEMS+=("[$BT_CMD] $ports SSH connections and $acc accepted sessions, not 1 and 1")
		it_log "PROBLEM: ${SESSION_PROBLEMS[-1]}; vm lines: $(jq -c 'select(.type == "vm") | [.vm, .seconds]' "$T/b.out" | tr '\n' ' ')"
	elif [[ -z $port ]]; then
		SESSION_PROBLEMS+=("[$BT_CMD] the session was not accepted with id_client ($FP_CLIENT): $(grep -m 1 'Accepted publickey' <<<"$new" || true)")
		it_log "PROBLEM: ${SESSION_PROBLEMS[-1]}"
	elif ! grep -qxF "Failed publickey for root from 127.0.0.1 port $port ssh2: ED25519 $FP_WRONG" <<<"$new"; then
		SESSION_PROBLEMS+=("[$BT_CMD] sshd did not refuse the plan's first identity id_wrong ($FP_WRONG) on port $port: $(grep 'publickey' <<<"$new" | tr '\n' ' ' || true)")
		it_log "PROBLEM: ${SESSION_PROBLEMS[-1]}"
	else
		it_log "one SSH session for [$BT_CMD]: id_wrong refused, id_client accepted (port $port)"
	fi
}
auth_ports() {
	grep -oE 'publickey for root from 127\.0\.0\.1 port [0-9]+' "$T/sshd.log" | sort -u | grep -c . || true
}

# ---------------------------------------------------------------- 1. snapshot
entries=()
for vm in "${VMS[@]}"; do entries+=("$(snap "$vm" s1)"); done
bt_plan "$T/plan-1.json" "$HEAD" "${entries[@]}"
one_session bt_batch 0 "$T/plan-1.json" --parallel 2
it_assert_eq "$(bt_summary)" '{"vms":4,"ok":4,"failed":0}' "1: summary"
for i in "${!VMS[@]}"; do
	bt_expect_vm "$i" 0
	for d in 0 1; do
		bt_push "${VMS[$i]}" "$d" "$T/img/${VMS[$i]}-d$d.s1.qcow2"
		bt_assert_chain "${VMS[$i]}" "$d"
		bt_write "${VMS[$i]}" "$d" "$(bt_pat "$i" "$d" 2)" 2M 2M
		bt_check_nbd "${VMS[$i]}" "$d"
	done
done

# ---------------------------------------------------------------- 2. commit
entries=()
for vm in "${VMS[@]}"; do entries+=("$(bt_vm "$(ssh_target "$T/$vm.qmp")" commit exp0 exp1)"); done
bt_plan "$T/plan-2.json" "$HEAD" "${entries[@]}"
one_session bt_batch 0 "$T/plan-2.json" --parallel 1
it_assert_eq "$(bt_summary)" '{"vms":4,"ok":4,"failed":0}' "2: summary"
bt_assert_parallel 1 0
for i in "${!VMS[@]}"; do
	bt_expect_vm "$i" 0
	for d in 0 1; do
		bt_pop "${VMS[$i]}" "$d"
		bt_assert_chain "${VMS[$i]}" "$d"
		bt_check_nbd "${VMS[$i]}" "$d"
		bt_write "${VMS[$i]}" "$d" "$(bt_pat "$i" "$d" 3)" 5M 1M
	done
	it_assert_eq "$(jq -r length <<<"${BT_CHAIN[${VMS[$i]}.0]}")" 1 "2: ${VMS[$i]} disk0 back to one layer"
	assert_no_jobs "$T/${VMS[$i]}.qmp" "2: ${VMS[$i]}"
done

# ---------------------------------------------------------------- 3. one socket missing
MISSING=$T/nosuch.qmp
ORDER=(vm0 vm1 missing vm2 vm3)
entries=()
for vm in "${ORDER[@]}"; do
	if [[ $vm == missing ]]; then
		entries+=("$(bt_vm "$(ssh_target "$MISSING")" snapshot "exp0=$T/img/missing.s2.qcow2")")
	else
		entries+=("$(snap "$vm" s2)")
	fi
done
bt_plan "$T/plan-3.json" "$HEAD" "${entries[@]}"
one_session bt_batch 1 "$T/plan-3.json" --parallel 2
it_assert_eq "$(bt_summary)" '{"vms":5,"ok":4,"failed":1}' "3: summary"
bt_expect_vm 2 3 "$MISSING"
it_log "3: missing socket: $(bt_vm_line 2 | jq -r .result.error.message)"
assert_gone "$T/img/missing.s2.qcow2"
for e in "${!ORDER[@]}"; do
	vm=${ORDER[$e]}
	[[ $vm == missing ]] && continue
	bt_expect_vm "$e" 0
	for d in 0 1; do
		bt_push "$vm" "$d" "$T/img/$vm-d$d.s2.qcow2"
		bt_assert_chain "$vm" "$d"
		bt_write "$vm" "$d" "$(bt_pat "${vm#vm}" "$d" 4)" 6M 1M
		bt_check_nbd "$vm" "$d"
	done
done

# ---------------------------------------------------------------- offline, every byte
for vm in "${VMS[@]}"; do stop_vm "$vm"; done
for vm in "${VMS[@]}"; do
	for d in 0 1; do bt_check_offline "$vm" "$d"; done
done
it_log "offline: every byte of ${#VMS[@]} VMs x 2 disks verified"
if ((${#SESSION_PROBLEMS[@]})); then
	for p in "${SESSION_PROBLEMS[@]}"; do it_log "one SSH session per batch, wrong key refused first: $p"; done
	it_fail "SSH sessions of the batches: ${SESSION_PROBLEMS[*]}"
fi
it_pass
