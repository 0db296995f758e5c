#!/usr/bin/env bash
# test-vmlock: one VM reached through two monitors (two -qmp sockets, and ssh:// to the
# second) has one journal and one lock: a second livemerge never acts while the first runs,
# and recovery finds an interrupted operation through either monitor.
#
# VM "vm": paused q35/TCG, -uuid, monitors A ($T/vm.qmp) and B ($T/vm.qmp2), disk vda made by
# mk_chain (base 0x10 at 0 MiB, top 0x11 at 1 MiB) with 24 MiB more of 0xa1 in the top, so a
# commit at --speed 2M runs for about 12 s.
#   1. commit vda --speed 2M through A, in the background. Meanwhile, through B: a commit and
#      a snapshot refused at once (exit 2, one line naming A's pid and verb; the overlay not
#      made; B's --debug trace shows it sent nothing but the identity queries); the same over
#      ssh:// to B's socket; a snapshot with --wait-lock 90 waits, says so, and runs after A
#      ended (its intent after A's end in the one journal, named after the UUID).
#   2. a commit through A SIGKILLed after its finalize is journaled (LIVEMERGE_CRASH_AT):
#      `recover` through B finishes it (the lock did not outlive the killed holder);
#      `history` through A and over ssh:// to B shows the same chain states.
#   3. a commit through A SIGKILLed after its intent; the journal renamed to the name an older
#      livemerge gave it (after monitor A): `recover` through A finds it and rolls back, the
#      file now named after the UUID.
#   4. batch: a plan naming the VM through A and B, one naming A twice (unix: and a plain
#      path), one naming a qemu-storage-daemon twice, and one naming another daemon through
#      its two monitors (it says not who it is, but both write one image): each exit 2 naming
#      both JSON paths, nothing run (no overlay file, chains as before); a plan of two distinct
#      VMs runs.
#   5. a VM with -name and no -uuid: its journal and lock named after the name and host; with
#      the lock held by flock(1), --wait-lock 1.5 refuses after 1.5 s (exit 2); once that
#      holder is SIGKILLed, the lock is free.
#   Every layer's data is read back with qemu-io read -P after QEMU quits, and live in between.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source=integration/lib-ssh.sh
. "$IT_DIR/lib-ssh.sh"

lm_setup
ssh_setup
ssh_start sshd
J=$T/j
UUID=6f1e0c2a-93d4-4b7e-a1c5-0d2e4f6a8b9c
A=$T/vm.qmp
B=$T/vm.qmp2
KEY="uuid+$UUID"

TOP=$(mk_chain "$T/img" vda 1 64M)
BASE=$T/img/vda.0.qcow2
qemu_io_check "$TOP" "write -P 0xa1 8M 24M"
it__launch vm "$A" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none \
	-uuid "$UUID" -qmp "unix:$A,server=on,wait=off" -qmp "unix:$B,server=on,wait=off" \
	-blockdev "driver=file,filename=$TOP,node-name=vda-file" \
	-blockdev "driver=qcow2,file=vda-file,node-name=vda-top" \
	-device "virtio-blk-pci,drive=vda-top,id=vda"
LM_SOCK=$A # lib-merge's lm_chain and assert_chain read it
export LM_SOCK

# lmx SOCK ARGS...: livemerge -c SOCK --journal $J ARGS, as lm does (LM_RC, $T/lm.out/err).
lmx() {
	local sock=$1
	shift
	LM_RC=0
	LM_CMD="livemerge -c $sock --journal $J $*"
	it_log "\$ $LM_CMD"
	# (the braces keep bash's "Killed" notice of a crash point out of the log)
	{ timeout -k 5 60 "$LM" -c "$sock" --journal "$J" "$@" >"$T/lm.out" 2>"$T/lm.err" </dev/null || LM_RC=$?; } 2>/dev/null
	[[ ! -s $T/lm.err ]] || sed 's/^/    stderr: /' "$T/lm.err" >&2
}

# bg NAME SOCK ARGS...: livemerge in the background (pid in BG_PID), output in $T/NAME.out/err.
bg() {
	local name=$1 sock=$2
	shift 2
	it_log "\$ livemerge -c $sock --journal $J $* &"
	(exec "$LM" -c "$sock" --journal "$J" "$@" >"$T/$name.out" 2>"$T/$name.err" </dev/null) &
	BG_PID=$!
	it_track "$name" "$BG_PID"
}

# bg_wait NAME PID SECS: wait for it; its exit status in BG_RC.
bg_wait() {
	it__wait_gone "$2" "$3" || it_fail "$1 still running after $3 s: $(tail -n 2 "$T/$1.err")"
	BG_RC=0
	wait "$2" 2>/dev/null || BG_RC=$?
	rm -f "$T/$1.pid"
}

# wait_line FILE TEXT WHAT: wait (10 s at most) until FILE holds TEXT.
wait_line() {
	local n=200
	until grep -qF -- "$2" "$1" 2>/dev/null; do
		((n-- > 0)) || it_fail "no $3 within 10 s: $(tail -n 2 "$1")"
		sleep 0.05
	done
}

# refused_busy WHAT PID VERB: the last run exited 2 with one line naming PID and VERB.
refused_busy() {
	((LM_RC == 2)) || it_fail "$1: expected exit 2 (busy): $(lm_report)"
	lm_one_line_error "livemerge pid $2 runs '$3' on it"
	grep -qF "uuid $UUID" "$T/lm.err" || it_fail "$1: the VM is not named: $(lm_report)"
}

# sent_only_queries WHAT TRACE: every command in a --debug trace is a query or the greeting's.
sent_only_queries() {
	local cmds
	cmds=$(grep -o '"execute": *"[a-z_-]*"' "$2" | sed 's/.*"\([a-z_-]*\)"$/\1/' | sort -u | tr '\n' ' ')
	[[ $cmds == *query-uuid* ]] || it_fail "$1: no query-uuid in its trace (is --debug tracing?): $cmds"
	it_assert_eq "$cmds" "qmp_capabilities query-uuid " "$1: commands it sent"
}

journal_ops() {
	jq -rsR '[split("\n")[] | fromjson?] | map(select(.step == "intent" or .step == "end")
		| "\(.op) \(.step) \(.ts)") | .[]' "$J/$KEY.journal"
}

# ---------------------------------------------------------------- 1. two monitors, one lock
bg a "$A" --json commit vda --speed 2M
APID=$BG_PID
wait_line "$T/a.out" '"status":"running"' "the commit through A running"
[[ -f $J/$KEY.lock && -f $J/$KEY.journal ]] || it_fail "no lock and journal named after the UUID: $(ls "$J")"
t0=$(date +%s%N)
lmx "$B" --debug commit vda
t1=$(date +%s%N)
cp "$T/lm.err" "$T/b-commit.trace"
grep -v '^\(<-\|->\) ' "$T/b-commit.trace" >"$T/lm.err" || true
refused_busy "commit through B" "$APID" commit
(((t1 - t0) / 1000000 < 5000)) || it_fail "the refusal took $(((t1 - t0) / 1000000)) ms: not at once"
sent_only_queries "commit through B" "$T/b-commit.trace"
lmx "$B" snapshot "vda=$T/img/never.qcow2"
refused_busy "snapshot through B" "$APID" commit
[[ ! -e $T/img/never.qcow2 ]] || it_fail "a refused snapshot made its overlay"
lmx "$B" --json recover
refused_busy "recover through B" "$APID" commit
# unix: and ssh:// to the same socket: one VM, one lock
lms -c "$(ssh_target "$B")" -i "$SSH_DIR/id_client" --known-hosts "$SSH_KH" --journal "$J" \
	snapshot "vda=$T/img/never.qcow2"
cp "$T/lm.err" "$T/lm.err.ssh"
# shellcheck disable=SC2153 # LMS_RC and LMS_CMD: set by lib-ssh's lms
LM_RC=$LMS_RC LM_CMD=$LMS_CMD refused_busy "snapshot over ssh:// to B" "$APID" commit
[[ ! -e $T/img/never.qcow2 ]] || it_fail "a refused snapshot over ssh made its overlay"
it__alive "$APID" || it_fail "the commit through A ended before the refusals were checked: the test proves nothing"
bg w "$B" --wait-lock 90 snapshot "vda=$T/img/vda.s1.qcow2"
WPID=$BG_PID
wait_line "$T/w.err" "waiting up to 90 s" "the --wait-lock run saying it waits"
grep -qF "livemerge pid $APID runs 'commit' on it" "$T/w.err" || it_fail "the waiting run does not name the holder: $(cat "$T/w.err")"
[[ ! -e $T/img/vda.s1.qcow2 ]] || it_fail "the waiting snapshot made its overlay while A ran"
it__alive "$APID" || it_fail "the commit through A ended before the waiting run was seen waiting"
bg_wait a "$APID" 90
((BG_RC == 0)) || it_fail "commit through A: exit $BG_RC: $(tail -n 2 "$T/a.err")"
bg_wait w "$WPID" 60
((BG_RC == 0)) || it_fail "the --wait-lock snapshot: exit $BG_RC: $(tail -n 2 "$T/w.err")"
ops=$(journal_ops)
it_log "journal: $ops"
# op 1 (A's commit) ends before op 2 (the waiting snapshot) begins
read -r a_end < <(awk '$1 == 1 && $2 == "end" { print $3 }' <<<"$ops")
read -r w_intent < <(awk '$1 == 2 && $2 == "intent" { print $3 }' <<<"$ops")
[[ -n $a_end && -n $w_intent ]] || it_fail "the journal does not hold both operations: $ops"
awk -v a="$a_end" -v w="$w_intent" 'BEGIN { exit !(w > a) }' || it_fail "the waiting snapshot began before the commit ended: $ops"
assert_chain vda "$T/img/vda.s1.qcow2" "$BASE"
hmp_write "$A" vda 0xb2 2M 1M
hmp_reads vm vda "read -P 0x10 0 1M" vda "read -P 0x11 1M 1M" vda "read -P 0xb2 2M 1M" vda "read -P 0xa1 8M 24M"

# ---------------------------------------------------------------- 2. recover through the other monitor
LIVEMERGE_CRASH_AT=finalize lmx "$A" commit vda
((LM_RC == 137)) || it_fail "commit with LIVEMERGE_CRASH_AT=finalize: expected SIGKILL (137): $(lm_report)"
lmx "$B" --json recover
((LM_RC == 0)) || it_fail "recover through B: $(lm_report)"
grep -q 'recovered: the operation is finished' "$T/lm.out" || it_fail "recover through B did not finish the commit: $(head -c 600 "$T/lm.out")"
assert_chain vda "$BASE"
[[ $(qmp_raw "$A" '{"execute":"query-jobs"}' | jq -c .return) == "[]" ]] || it_fail "jobs left after recover"
lmx "$B" recover
if ((LM_RC != 0)) || ! grep -q 'nothing to recover' "$T/lm.err"; then
	it_fail "a second recover through B: $(lm_report)"
fi
hmp_reads vm vda "read -P 0x10 0 1M" vda "read -P 0x11 1M 1M" vda "read -P 0xb2 2M 1M" vda "read -P 0xa1 8M 24M"

# history: the one journal's chain states, the same through A and through ssh:// to B
lmx "$A" --json history
((LM_RC == 0)) || it_fail "history through A: $(lm_report)"
hist_a=$(jq -c 'select(.type == "state") | [.op, .verb, [.disks[].chain[].filename]]' "$T/lm.out")
(($(wc -l <<<"$hist_a") >= 3)) || it_fail "history through A: fewer than 3 states: $hist_a"
it_assert_eq "$(tail -n 1 <<<"$hist_a" | jq -r '.[1]')" recover "history through A: the last state's verb"
lms -c "$(ssh_target "$B")" -i "$SSH_DIR/id_client" --known-hosts "$SSH_KH" --journal "$J" --json history
((LMS_RC == 0)) || it_fail "history over ssh: $(lms_report)"
it_assert_eq "$(jq -c 'select(.type == "state") | [.op, .verb, [.disks[].chain[].filename]]' "$T/lm.out")" \
	"$hist_a" "history over ssh:// to B"

# ---------------------------------------------------------------- 3. an older journal, named after monitor A
lmx "$A" snapshot "vda=$T/img/vda.s2.qcow2"
((LM_RC == 0)) || it_fail "snapshot: $(lm_report)"
hmp_write "$A" vda 0xc3 3M 1M
LIVEMERGE_CRASH_AT=intent lmx "$A" commit vda
((LM_RC == 137)) || it_fail "commit with LIVEMERGE_CRASH_AT=intent: expected SIGKILL (137): $(lm_report)"
OLD=$J/${A//\//_}.journal
mv "$J/$KEY.journal" "$OLD"
lmx "$A" --json recover
((LM_RC == 0)) || it_fail "recover from the older journal: $(lm_report)"
grep -q 'recovered: the operation is rolled back' "$T/lm.out" || it_fail "recover did not find the older journal's operation: $(head -c 600 "$T/lm.out")"
[[ ! -e $OLD && -f $J/$KEY.journal ]] || it_fail "the older journal was not taken over: $(ls "$J")"
assert_chain vda "$T/img/vda.s2.qcow2" "$BASE"

# ---------------------------------------------------------------- 4. batch: one VM twice
start_qsd q "$(mk_chain "$T/img" q 0 8M)"
plan_refused() {
	local what=$1 plan=$2 want=$3 before after
	before=$(vm_state "$B")
	qbefore=$(qmp_chain_of "$T/q.qmp" disk0)
	LM_RC=0
	LM_CMD="livemerge batch $plan ($what)"
	timeout -k 5 60 "$LM" --journal "$J" batch "$plan" >"$T/lm.out" 2>"$T/lm.err" </dev/null || LM_RC=$?
	((LM_RC == 2)) || it_fail "$what: expected exit 2: $(lm_report)"
	lm_one_line_error "plan \$.vms[0] and \$.vms[1] name one VM ($want"
	[[ ! -s $T/lm.out ]] || it_fail "$what: a refused plan printed: $(head -c 300 "$T/lm.out")"
	[[ ! -e $T/img/b1.qcow2 && ! -e $T/img/b2.qcow2 ]] || it_fail "$what: an overlay was made"
	after=$(vm_state "$B")
	it_assert_eq "$after" "$before" "$what: the VM's block state"
	it_assert_eq "$(qmp_chain_of "$T/q.qmp" disk0)" "$qbefore" "$what: the daemon's chain"
}
vmline() {
	jq -nc --arg t "$1" --arg o "$2" --arg d "$3" '{target: $t, verb: "snapshot", args: ["\($d)=\($o)"]}'
}
jq -nc --argjson a "$(vmline "unix:$A" "$T/img/b1.qcow2" vda)" --argjson b "$(vmline "$B" "$T/img/b2.qcow2" vda)" \
	'{vms: [$a, $b]}' >"$T/two-monitors.json"
plan_refused "two monitors of one VM" "$T/two-monitors.json" "both reach the VM with uuid $UUID"
jq -nc --argjson a "$(vmline "unix:$A" "$T/img/b1.qcow2" vda)" --argjson b "$(vmline "$A" "$T/img/b2.qcow2" vda)" \
	'{vms: [$a, $b]}' >"$T/one-target.json"
plan_refused "one monitor twice" "$T/one-target.json" "both name the monitor"
jq -nc --argjson a "$(vmline "$T/q.qmp" "$T/img/b1.qcow2" disk0)" --argjson b "$(vmline "unix:$T/q.qmp" "$T/img/b2.qcow2" disk0)" \
	'{vms: [$a, $b]}' >"$T/qsd.json"
plan_refused "one storage daemon twice" "$T/qsd.json" "both name the monitor"
# a storage daemon through two monitors: neither says which it is, but both write one image
R=$(mk_chain "$T/img" r 0 8M)
it__launch r "$T/r.qmp" qemu-storage-daemon \
	--blockdev "driver=file,filename=$R,node-name=disk0-file" \
	--blockdev "driver=qcow2,file=disk0-file,node-name=disk0" \
	--nbd-server "addr.type=unix,addr.path=$T/r.nbd" --export "type=nbd,id=exp0,node-name=disk0,writable=on" \
	--chardev "socket,id=m1,path=$T/r.qmp,server=on,wait=off" --monitor chardev=m1 \
	--chardev "socket,id=m2,path=$T/r.qmp2,server=on,wait=off" --monitor chardev=m2
jq -nc --argjson a "$(vmline "$T/r.qmp" "$T/img/b1.qcow2" disk0)" --argjson b "$(vmline "$T/r.qmp2" "$T/img/b2.qcow2" disk0)" \
	'{vms: [$a, $b]}' >"$T/qsd-monitors.json"
plan_refused "one storage daemon through two monitors" "$T/qsd-monitors.json" "both write the image $R"
# a check that the plans above could run: the same plan with two distinct VMs does
jq -nc --argjson a "$(vmline "unix:$A" "$T/img/b1.qcow2" vda)" --argjson b "$(vmline "$T/q.qmp" "$T/img/b2.qcow2" disk0)" \
	'{vms: [$a, $b]}' >"$T/distinct.json"
timeout -k 5 60 "$LM" --journal "$J" batch "$T/distinct.json" >"$T/lm.out" 2>"$T/lm.err" </dev/null ||
	it_fail "a plan of two distinct VMs: exit $?: $(head -n 3 "$T/lm.err")"
assert_chain vda "$T/img/b1.qcow2" "$T/img/vda.s2.qcow2" "$BASE"

# ---------------------------------------------------------------- 5. a VM with a name and no UUID
# (started as no -uuid VM would be: query-uuid answers all zeros); the lock held by a process
# that is not livemerge (flock(1)), so the file does not say who holds it
it__launch named "$T/named.qmp" qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none \
	-name "web 1" -qmp "unix:$T/named.qmp,server=on,wait=off"
NKEY="name+web_201+local"
lmx "$T/named.qmp" recover
((LM_RC == 0)) || it_fail "recover on the named VM: $(lm_report)"
[[ -f $J/$NKEY.journal && -f $J/$NKEY.lock ]] || it_fail "no journal and lock named after the VM's name: $(ls "$J")"
flock -o "$J/$NKEY.lock" sleep 60 &
FPID=$!
it_track flock "$FPID"
n=100
until ! flock -n "$J/$NKEY.lock" true; do
	((n-- > 0)) || it_fail "flock(1) did not take the lock"
	sleep 0.05
done
t0=$(date +%s%N)
lmx "$T/named.qmp" --wait-lock 1.5 recover
t1=$(date +%s%N)
((LM_RC == 2)) || it_fail "--wait-lock 1.5 on a held lock: expected exit 2: $(lm_report)"
grep -q "waiting up to 1.5 s" "$T/lm.err" || it_fail "it did not say it waits: $(lm_report)"
[[ $(tail -n 1 "$T/lm.err") == "livemerge: waited 1.5 s: the VM (name 'web 1' on local) is busy: another process holds its lock"* ]] ||
	it_fail "no 'waited' refusal naming the VM: $(lm_report)"
(((t1 - t0) / 1000000 >= 1400)) || it_fail "refused after $(((t1 - t0) / 1000000)) ms: it did not wait"
kill -KILL "$FPID"
wait "$FPID" 2>/dev/null || true # (sleep 60, its child, does not hold the lock: flock -o)
rm -f "$T/flock.pid"
lmx "$T/named.qmp" recover
((LM_RC == 0)) || it_fail "recover once the holder was killed: $(lm_report)"
stop_vm named

# ---------------------------------------------------------------- data, offline
stop_vm vm
stop_vm q
stop_vm r
qemu_io_check -r "$T/img/b1.qcow2" "read -P 0x10 0 1M" "read -P 0x11 1M 1M" "read -P 0xb2 2M 1M" \
	"read -P 0xc3 3M 1M" "read -P 0xa1 8M 24M" "read -P 0 32M 32M"
qemu_io_check -r "$BASE" "read -P 0x10 0 1M" "read -P 0x11 1M 1M" "read -P 0xb2 2M 1M" \
	"read -P 0 3M 1M" "read -P 0xa1 8M 24M"
qemu_io_check -r "$T/img/vda.s2.qcow2" "read -P 0xc3 3M 1M"
it_pass
