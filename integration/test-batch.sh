#!/usr/bin/env bash
# test-batch: livemerge batch on many qemu-storage-daemon "VMs" at once, every byte checked.
#
# VMs vm0..vm5 (and vmu): two disks each, exported over NBD (exp0, exp1): disk0 one layer,
# disk1 two; every layer holds its own pattern (distinct per VM, disk and layer). vmu's disk0
# base lives on an 8 MiB tmpfs.
#   malformed plans (two more qsd, vmx and vmy, as targets): not JSON (truncated, garbage,
#     trailing garbage after a valid plan), top-level array, unknown top-level key, unknown
#     key in a vm, missing target, bad verb, args not an array, an arg not a string, a bad
#     option inside args (--speed x), defaults.identity not an array, parallel 0, the first
#     of two errors: each exit 2, one stderr line naming the JSON path, nothing on stdout,
#     no journal written, no overlay created, both VMs' block state unchanged
#   A. snapshot batch, --parallel 3 over the plan's "parallel": 1: the six good VMs, a socket
#      that does not exist (its vm line: outcome 3) and vmu with an unknown disk (outcome 2,
#      nothing changed, its other overlay not created): exit 1, summary 8/6/2; the good
#      VMs' chains (livemerge --json chain and QEMU) have their overlays
#   writes through every NBD export (they land in the overlays)
#   B. commit batch (exp0 exp1 --speed 1 MiB/s, 2 MiB in each overlay), --parallel 2 over
#      the plan's 16: exit 0, 6/6/0, chains back (disk0 to one layer), every byte through NBD;
#      --parallel honoured: see bt_assert_parallel (line order + VM-seconds vs wall time)
#   C. snapshot batch of all seven: exit 0; writes, vmu's disk0 12 MiB more than its tmpfs holds
#   D. commit batch of all seven, vmu in the middle, the plan's "parallel": 3 (no --parallel):
#      vmu runs out of space (outcome 1, its block state unchanged), the six others commit:
#      exit 1, 7/6/1
#   writes after, then every qsd stops and every disk is read back offline (read -P of each
#   range and qemu-img compare with a raw reference: every byte).
# Problems with malformed plans are collected and reported at the end (the rest still runs).
# A not-JSON plan has no JSON path to name: its line must name the file and say "JSON".
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-batch.sh
. "$IT_DIR/lib-batch.sh"
lm_setup

J=$T/j
SMALL=$T/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=8M,mode=0700 lmbatch "$SMALL" || it_fail "cannot mount a tmpfs (needs root)"
lm_on_exit "umount -l '$SMALL'"

GOOD=(vm0 vm1 vm2 vm3 vm4 vm5)
for i in "${!GOOD[@]}"; do
	bt_start "${GOOD[$i]}" "$i"
done
bt_start vmu 6 "$SMALL"
ALL=("${GOOD[@]}" vmu)
declare -A IDX=([vmu]=6)
for i in "${!GOOD[@]}"; do IDX[${GOOD[$i]}]=$i; done
tg() { echo "unix:$T/$1.qmp"; }

# ---------------------------------------------------------------- malformed plans
it_log "== malformed plans (at ${SECONDS} s)"
qemu-img create -q -f qcow2 "$T/img/x.qcow2" 16M
qemu-img create -q -f qcow2 "$T/img/y.qcow2" 16M
start_qsd vmx "$T/img/x.qcow2"
start_qsd vmy "$T/img/y.qcow2"
JBAD=$T/jbad
BAD_HEAD=$(jq -nc --arg j "$JBAD" '{defaults: {journal: $j}}')
PROBLEMS=()

# the valid plan the malformed ones are made from: vms[0] on vmx, vms[1] on vmy, snapshots
bad_base() { # bad_base CASE: the plan as JSON
	local f
	f=$(mktemp "$T/plan.XXXXXX")
	bt_plan "$f" "$BAD_HEAD" "$(bt_vm "$(tg vmx)" snapshot "exp0=$T/img/bad-$1-x.qcow2")" \
		"$(bt_vm "$(tg vmy)" snapshot "exp0=$T/img/bad-$1-y.qcow2")"
	cat "$f"
	rm -f "$f"
}

# bad_plan CASE FILE WANT...: the plan in FILE is refused: exit 2, one stderr line
# "livemerge: batch: ..." holding every WANT, nothing on stdout, nothing run. A problem is
# recorded in PROBLEMS (a journal it wrote is removed; each case compares the states from
# just before it, so one that ran does not spoil the next).
bad_plan() {
	local case=$1 file=$2 sx sy rc=0 n w
	local -a p=()
	shift 2
	sx=$(state_of "$T/vmx.qmp")
	sy=$(state_of "$T/vmy.qmp")
	BT_CMD="livemerge --json batch $file --parallel 3"
	it_log "\$ $BT_CMD  # $case: $(head -c 300 "$file" | tr '\n' ' ')"
	timeout -k 5 30 "$LM" --json batch "$file" --parallel 3 >"$T/b.out" 2>"$T/b.err" </dev/null || rc=$?
	BT_RC=$rc
	sed 's/^/    stderr: /' "$T/b.err" >&2
	((rc == 2)) || p+=("exit $rc, not 2")
	n=$(grep -c '' "$T/b.err" || true)
	((n == 1)) || p+=("$n lines on stderr, not 1")
	grep -q '^livemerge: batch: ' "$T/b.err" || p+=("stderr does not start with 'livemerge: batch: '")
	for w; do
		grep -qF -- "$w" "$T/b.err" || p+=("stderr does not name '$w'")
	done
	[[ ! -s $T/b.out ]] || p+=("stdout not empty: $(head -c 200 "$T/b.out")")
	if [[ -e $JBAD || -n $(ls -A "$T/state") ]]; then
		p+=("a journal was written: $(find "$JBAD" "$T/state" -type f 2>/dev/null | tr '\n' ' ')")
		rm -rf -- "$JBAD" "${T:?}/state/"*
	fi
	for w in "$T/img/bad-$case-x.qcow2" "$T/img/bad-$case-y.qcow2"; do
		[[ ! -e $w ]] || p+=("overlay $w was created")
	done
	[[ $(state_of "$T/vmx.qmp") == "$sx" ]] || p+=("vmx's block state changed")
	[[ $(state_of "$T/vmy.qmp") == "$sy" ]] || p+=("vmy's block state changed")
	if ((${#p[@]})); then
		PROBLEMS+=("[$case] $(IFS=';'; echo "${p[*]}" | cut -c 1-160)")
		it_log "PROBLEM with malformed plan '$case' [$BT_CMD]: $(IFS=';'; echo "${p[*]}"); stderr (cat -A): $(head -c 300 "$T/b.err" | cat -A | tr '\n' ' ')"
	fi
}

# bad_jq CASE JQ WANT...: the base plan transformed by the jq program JQ must be refused.
bad_jq() {
	local case=$1 prog=$2 f=$T/bad-$1.json
	shift 2
	bad_base "$case" | jq "$prog" >"$f" || it_fail "bad_jq $case: jq '$prog' failed"
	bad_plan "$case" "$f" "$@"
}

# not JSON: cut short; garbage; a valid plan followed by garbage (must not be run either)
f=$T/bad-truncated.json
bad_base truncated | jq -c . | head -c 120 >"$f"
bad_plan truncated "$f" "$f" JSON
f=$T/bad-garbage.json
printf '{"vms": [ {"target": unix:/x} ]}\n' >"$f"
bad_plan garbage "$f" "$f" JSON
f=$T/bad-trailing.json
{ bad_base trailing; echo ' and then some words'; } >"$f"
bad_plan trailing "$f" "$f" JSON
bad_jq array '[.vms[]]' '$'
bad_jq topkey '. + {paralel: 2}' '$.paralel'
bad_jq vmkey '.vms[1].disk = "exp0"' '$.vms[1].disk'
bad_jq notarget '.vms[1] |= del(.target)' '$.vms[1].target'
bad_jq verb '.vms[1].verb = "merge"' '$.vms[1].verb'
bad_jq verb-chain '.vms[1].verb = "chain"' '$.vms[1].verb'
bad_jq args-object '.vms[1].args = {"exp0": "x"}' '$.vms[1].args'
bad_jq args-string '.vms[1].args = (.vms[1].args[0])' '$.vms[1].args'
bad_jq arg-int '.vms[1].args += [5]' '$.vms[1].args[1]'
bad_jq speed '.vms[1] = {target: .vms[1].target, verb: "commit", args: ["exp0", "--speed", "x"]}' \
	'$.vms[1].args' "--speed"
bad_jq identity '.defaults.identity = "/root/.ssh/id_ed25519"' '$.defaults.identity'
bad_jq parallel0 '.parallel = 0' '$.parallel'
# the first error is named, not a later one
bad_jq first '.vms[1].verb = "merge" | .vms[0].colour = "red" | .vms += [{"verb": "commit"}]' '$.vms[0].colour'
if grep -qF 'vms[1]' "$T/b.err"; then PROBLEMS+=("[first] names a later error too: $(cat "$T/b.err")"); fi
# --parallel 0 on the command line
bad_base cli0 >"$T/plan-cli0.json"
lm_rc=0
"$LM" --json batch "$T/plan-cli0.json" --parallel 0 >"$T/b.out" 2>"$T/b.err" </dev/null || lm_rc=$?
((lm_rc == 2)) || PROBLEMS+=("[cli0] --parallel 0: exit $lm_rc: $(cat "$T/b.err")")
[[ ! -e $T/img/bad-cli0-x.qcow2 && ! -e $JBAD ]] || PROBLEMS+=("[cli0] --parallel 0 ran the plan")
it_log "malformed plans: ${#PROBLEMS[@]} problems"
stop_vm vmx
stop_vm vmy

# ---------------------------------------------------------------- A. snapshot, two bad entries
it_log "== A (at ${SECONDS} s)"
HEAD=$(jq -nc --arg j "$J" '{parallel: 1, defaults: {journal: $j, timeout: 30}}')
snap() { # snap VM TAG: the snapshot entry of both disks of VM, overlays NAME-dD.TAG.qcow2
	bt_vm "$(tg "$1")" snapshot "exp0=$T/img/$1-d0.$2.qcow2" "exp1=$T/img/$1-d1.$2.qcow2"
}
MISSING=$T/missing.qmp
bt_plan "$T/plan-a.json" "$HEAD" "$(snap vm0 sa)" "$(snap vm1 sa)" "$(snap vm2 sa)" \
	"$(bt_vm "unix:$MISSING" snapshot "exp0=$T/img/missing.sa.qcow2")" "$(snap vm3 sa)" \
	"$(bt_vm "$(tg vmu)" snapshot "exp0=$T/img/vmu-d0.sa.qcow2" "exp9=$T/img/vmu-d9.sa.qcow2")" \
	"$(snap vm4 sa)" "$(snap vm5 sa)"
A_GOOD=(0 1 2 4 6 7) # plan entries of vm0..vm5
su=$(state_of "$T/vmu.qmp")
bt_batch 1 "$T/plan-a.json" --parallel 3
it_assert_eq "$(bt_summary)" '{"vms":8,"ok":6,"failed":2}' "A: summary"
for e in "${A_GOOD[@]}"; do bt_expect_vm "$e" 0; done
bt_expect_vm 3 3 "$MISSING"
bt_expect_vm 5 2 "exp9"
it_log "A: missing socket: $(bt_vm_line 3 | jq -r .result.error.message)"
it_log "A: unknown disk: $(bt_vm_line 5 | jq -r .result.error.message)"
assert_state_unchanged "$T/vmu.qmp" "$su" "A: vmu (unknown disk)"
assert_gone "$T/img/vmu-d0.sa.qcow2" "$T/img/vmu-d9.sa.qcow2" "$T/img/missing.sa.qcow2"
for vm in "${GOOD[@]}"; do
	for d in 0 1; do
		bt_push "$vm" "$d" "$T/img/$vm-d$d.sa.qcow2"
		bt_assert_chain "$vm" "$d"
		# the vm line's result has the same chain
		got=$(jq -c --arg f "$(bt_top "$vm" "$d")" '.result.disks[] | select(.chain[0].filename == $f) | [.chain[].filename]' \
			<<<"$(bt_vm_line "${A_GOOD[${IDX[$vm]}]}")")
		it_assert_eq "$got" "${BT_CHAIN[$vm.$d]}" "A: $vm disk$d: the chain in its vm line"
	done
done
bt_assert_chain vmu 0
bt_assert_chain vmu 1

# 2 MiB per disk into the overlays (vmu: into its bases), read back live
for vm in "${ALL[@]}"; do
	for d in 0 1; do
		bt_write "$vm" "$d" "$(bt_pat "${IDX[$vm]}" "$d" 2)" 2M 2M
		bt_check_nbd "$vm" "$d"
	done
done

# ---------------------------------------------------------------- B. commit, --parallel 2
it_log "== B (at ${SECONDS} s)"
HEAD_B=$(jq -nc --arg j "$J" '{parallel: 16, defaults: {journal: $j}}')
entries=()
for vm in "${GOOD[@]}"; do
	entries+=("$(bt_vm "$(tg "$vm")" commit exp0 exp1 --speed 1048576)")
done
bt_plan "$T/plan-b.json" "$HEAD_B" "${entries[@]}"
bt_batch 0 "$T/plan-b.json" --parallel 2
it_assert_eq "$(bt_summary)" '{"vms":6,"ok":6,"failed":0}' "B: summary"
for i in "${!GOOD[@]}"; do bt_expect_vm "$i" 0; done
bt_assert_parallel 2 1
for vm in "${GOOD[@]}"; do
	for d in 0 1; do
		bt_pop "$vm" "$d"
		bt_assert_chain "$vm" "$d"
		bt_check_nbd "$vm" "$d"
	done
	it_assert_eq "$(jq -r 'length' <<<"${BT_CHAIN[$vm.0]}")" 1 "B: $vm disk0 back to one layer"
	assert_no_jobs "$T/$vm.qmp" "B: $vm"
done
for vm in "${GOOD[@]}"; do
	for d in 0 1; do
		bt_write "$vm" "$d" "$(bt_pat "${IDX[$vm]}" "$d" 3)" 5M 1M
		bt_check_nbd "$vm" "$d"
	done
done

# ---------------------------------------------------------------- C. snapshot of all seven
it_log "== C (at ${SECONDS} s)"
entries=()
for vm in "${ALL[@]}"; do entries+=("$(snap "$vm" sc)"); done
bt_plan "$T/plan-c.json" "$HEAD" "${entries[@]}"
bt_batch 0 "$T/plan-c.json" --parallel 3
it_assert_eq "$(bt_summary)" '{"vms":7,"ok":7,"failed":0}' "C: summary"
for vm in "${ALL[@]}"; do
	for d in 0 1; do
		bt_push "$vm" "$d" "$T/img/$vm-d$d.sc.qcow2"
		bt_assert_chain "$vm" "$d"
		bt_write "$vm" "$d" "$(bt_pat "${IDX[$vm]}" "$d" 4)" 6M 1M
	done
done
# vmu's disk0: 12 MiB more in the overlay than its base's tmpfs can take
it_log "tmpfs: $(df -k --output=avail "$SMALL" | tail -n 1 | tr -d ' ') KiB free"
bt_write vmu 0 0x5a 8M 12M
for vm in "${ALL[@]}"; do bt_check_nbd "$vm" 0; bt_check_nbd "$vm" 1; done

# ---------------------------------------------------------------- D. commit, vmu out of space
it_log "== D (at ${SECONDS} s)"
ORDER=(vm0 vm1 vm2 vmu vm3 vm4 vm5)
entries=()
for vm in "${ORDER[@]}"; do entries+=("$(bt_vm "$(tg "$vm")" commit exp0 exp1)"); done
# the plan's own "parallel" this time (B showed --parallel overriding it)
bt_plan "$T/plan-d.json" "$(jq -nc --arg j "$J" '{parallel: 3, defaults: {journal: $j}}')" "${entries[@]}"
su=$(state_of "$T/vmu.qmp")
bt_batch 1 "$T/plan-d.json"
it_assert_eq "$(bt_summary)" '{"vms":7,"ok":6,"failed":1}' "D: summary"
for e in "${!ORDER[@]}"; do
	[[ ${ORDER[$e]} == vmu ]] && continue
	bt_expect_vm "$e" 0
done
bt_expect_vm 3 1 "no space"
it_log "D: vmu: $(bt_vm_line 3 | jq -r .result.error.message)"
bt_assert_parallel 3 0
assert_state_unchanged "$T/vmu.qmp" "$su" "D: vmu (out of space)"
for vm in "${ALL[@]}"; do
	for d in 0 1; do
		[[ $vm == vmu ]] || bt_pop "$vm" "$d"
		bt_assert_chain "$vm" "$d"
		bt_check_nbd "$vm" "$d"
		bt_write "$vm" "$d" "$(bt_pat "${IDX[$vm]}" "$d" 5)" 7M 1M
		bt_check_nbd "$vm" "$d"
	done
done

# ---------------------------------------------------------------- offline, every byte
it_log "== offline (at ${SECONDS} s)"
for vm in "${ALL[@]}"; do stop_vm "$vm"; done
for vm in "${ALL[@]}"; do
	for d in 0 1; do bt_check_offline "$vm" "$d"; done
done
it_log "offline: every byte of ${#ALL[@]} VMs x 2 disks verified"

if ((${#PROBLEMS[@]})); then
	it_fail "malformed plans: ${#PROBLEMS[@]} problems: ${PROBLEMS[*]}"
fi
it_pass
