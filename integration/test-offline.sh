#!/usr/bin/env bash
# test-offline: a stopped VM's chains (-c offline:DISK=PATH,...), merged through the
# qemu-storage-daemon livemerge starts for the one command. Two disks, chains of 4 layers
# (mk_chain: layer i holds pattern 0x10+i at i MiB):
#   chain                          -> both chains read from the images, no daemon left
#   intermediate commit, each disk -> top's overlay re-pointed on disk, data through the top;
#                                     livemerge SIGKILLed after the pivot: recover finishes it
#   active commit of both at once  -> the new tops (the layer below) hold every pattern; the
#                                     headers on disk say so (read back after the daemon)
#   stream of both at once         -> flat images, qemu-img compare against raw references
#   snapshot of both at once       -> new overlays on the images, data through them
#   a real QEMU holds an image     -> exit 3, its pid and name in the message, every image
#                                     byte for byte as before
#   SIGKILL of livemerge mid-commit (LIVEMERGE_CRASH_AT, a slow job) -> no daemon left;
#                                     recover with the same target finishes: chains as before
#   the daemon killed mid-commit   -> exit 4; recover finishes; data checked
#   over ssh:// (sshd on 127.0.0.1) -> active commit of both disks, data and headers checked;
#                                     SIGKILL mid-commit: the daemon ends with the channel,
#                                     recover over ssh rolls back; an image a QEMU holds is
#                                     refused with the holder named
#   bad targets and images, watch, a batch plan naming an offline target -> exit 2, nothing
#                                     started; no qemu-storage-daemon on PATH -> exit 3
# Every daemon's directory is under $T/tmp (TMPDIR), so "a daemon left" is a process whose
# command line names it, and "a directory left" is an entry there.
# it-timeout: 240
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-ssh.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-ssh.sh"
it_setup
it_require_lm
mkdir -p "$T/img" "$T/tmp" "$T/j"
I=$T/img
SIZE=32M

# olm [TARGET] ARGS...: livemerge -c TARGET (default $TG), journal $T/j, daemons' directories
# under $T/tmp; status OLM_RC, stdout $T/o.out, stderr $T/o.err.
olm() {
	local tg=$TG
	if [[ $1 == offline:* || $1 == ssh://* ]]; then
		tg=$1
		shift
	fi
	OLM_RC=0
	OLM_CMD="livemerge -c $tg $*"
	it_log "\$ ${OLM_ENV:+$OLM_ENV }$OLM_CMD"
	{ timeout -k 5 90 env TMPDIR="$T/tmp" ${OLM_ENV:-} "$LM" -c "$tg" --journal "$T/j" "$@" \
		>"$T/o.out" 2>"$T/o.err" </dev/null; } 2>/dev/null || OLM_RC=$?
	[[ ! -s $T/o.err ]] || sed 's/^/    stderr: /' "$T/o.err" | head -n 12 >&2
}

olm_report() {
	echo "[$OLM_CMD] exit $OLM_RC; stderr: $(head -c 600 "$T/o.err" | tr '\n' ' '); stdout: $(head -c 300 "$T/o.out")"
}

# olm_expect RC ARGS...: olm, fail unless it exits RC.
olm_expect() {
	local want=$1
	shift
	olm "$@"
	((OLM_RC == want)) || it_fail "expected exit $want: $(olm_report)"
}

# no_daemon_left WHAT: no qemu-storage-daemon of ours runs (5 s to go), no directory is left.
no_daemon_left() {
	local n=100
	while pgrep -f "qemu-storage-daemon.*$T/tmp/" >/dev/null && ((n-- > 0)); do
		sleep 0.05
	done
	! pgrep -af "qemu-storage-daemon.*$T/tmp/" >&2 || it_fail "$1: a qemu-storage-daemon is left"
	[[ -z $(ls -A "$T/tmp") ]] || it_fail "$1: left in TMPDIR: $(ls -A "$T/tmp")"
}

# files_of DISK: the disk's chain in the last --json result or chain output, files top first.
files_of() {
	jq -sc --arg d "$1" '[.[] | if .type == "result" then .disks[] else . end
		| select(.disk == $d and (.chain | type) == "array") | [.chain[].filename]] | last' "$T/o.out"
}

# chain_on_disk TOP: the chain the image headers name, from TOP down (qemu-img, not us).
chain_on_disk() {
	qemu-img info -U --backing-chain --output=json "$1" | jq -c '[.[].filename]'
}

# data_ok FILE PATTERNS...: FILE (and its chain) reads pattern i at i MiB for each given i.
data_ok() {
	local f=$1 i
	local -a cmds=()
	shift
	for i; do
		cmds+=("read -P $(chain_pattern "$i") $((i * IT_MIB)) $IT_MIB")
	done
	qemu_io_check -r "$f" "${cmds[@]}"
}

# killed_mid_commit WHAT N PZ PW [OPTS...]: an active commit of vda and vdb ($TG: z.N and w.N,
# 8 MiB of PZ / PW at 16 MiB in them; OPTS before the verb) at 1 MiB/s, livemerge SIGKILLed
# right after the second job's start is journaled (the first job runs): no daemon is left;
# recover with the same target rolls back: the chains on disk as before, every pattern there.
killed_mid_commit() {
	local what=$1 n=$2 pz=$3 pw=$4 d i want
	shift 4
	OLM_ENV=LIVEMERGE_CRASH_AT=start#2 olm_expect 137 "$@" --json commit vda vdb --speed 1M
	no_daemon_left "$what"
	olm_expect 0 "$@" recover
	grep -q "rolled back" "$T/o.err" || it_fail "$what: recover did not roll back: $(olm_report)"
	for d in z w; do
		want=$(for ((i = n; i >= 0; i--)); do echo "$I/$d.$i.qcow2"; done | jq -Rsc 'split("\n")[:-1]')
		it_assert_eq "$(chain_on_disk "$I/$d.$n.qcow2")" "$want" "$what: $d's chain on disk"
		data_ok "$I/$d.$n.qcow2" 0 1 2
	done
	qemu_io_check -r "$I/z.$n.qcow2" "read -P $pz 16M 8M"
	qemu_io_check -r "$I/w.$n.qcow2" "read -P $pw 16M 8M"
}

# ---------------------------------------------------------------- the chains
x=$(mk_chain "$I" x 3 $SIZE)
y=$(mk_chain "$I" y 3 $SIZE)
for d in x y; do
	qemu-img convert -O raw "$I/$d.3.qcow2" "$T/$d.ref.raw"
done
TG="offline:vda=$I/x.3.qcow2,vdb=$I/y.3.qcow2"

olm_expect 0 --json chain
it_assert_eq "$(files_of vda)" "[\"$I/x.3.qcow2\",\"$I/x.2.qcow2\",\"$I/x.1.qcow2\",\"$I/x.0.qcow2\"]" "chain vda"
it_assert_eq "$(files_of vdb)" "[\"$I/y.3.qcow2\",\"$I/y.2.qcow2\",\"$I/y.1.qcow2\",\"$I/y.0.qcow2\"]" "chain vdb"
no_daemon_left chain

# ---------------------------------------------------------------- intermediate commit
# (one disk a command: --top names one layer; a node name of one chain only)
olm_expect 0 --json commit vda --top "$I/x.2.qcow2"
it_assert_eq "$(files_of vda)" "[\"$I/x.3.qcow2\",\"$I/x.1.qcow2\",\"$I/x.0.qcow2\"]" "intermediate commit: vda's result"
# vdb's killed right after its pivot (the dismiss journaled): recover finds it done
OLM_ENV=LIVEMERGE_CRASH_AT=dismiss olm_expect 137 --json commit vdb --top "$I/y.2.qcow2"
no_daemon_left "SIGKILL after the pivot"
olm_expect 0 recover
grep -q "the operation is finished" "$T/o.err" || it_fail "recover after the pivot: not finished: $(olm_report)"
for d in x y; do
	it_assert_eq "$(chain_on_disk "$I/$d.3.qcow2")" "[\"$I/$d.3.qcow2\",\"$I/$d.1.qcow2\",\"$I/$d.0.qcow2\"]" "intermediate commit: $d's chain on disk"
	data_ok "$I/$d.3.qcow2" 0 1 2 3
	data_ok "$I/$d.1.qcow2" 0 1 2 # layer 2's data went down into layer 1
done
no_daemon_left "intermediate commit"

# ---------------------------------------------------------------- active commit of both
olm_expect 0 --json commit vda vdb
it_assert_eq "$(files_of vda)" "[\"$I/x.1.qcow2\",\"$I/x.0.qcow2\"]" "active commit: vda's result"
it_assert_eq "$(files_of vdb)" "[\"$I/y.1.qcow2\",\"$I/y.0.qcow2\"]" "active commit: vdb's result"
for d in x y; do
	it_assert_eq "$(chain_on_disk "$I/$d.1.qcow2")" "[\"$I/$d.1.qcow2\",\"$I/$d.0.qcow2\"]" "active commit: $d's chain on disk"
	data_ok "$I/$d.1.qcow2" 0 1 2 3
	qemu-img compare -q "$T/$d.ref.raw" "$I/$d.1.qcow2" || it_fail "active commit: $d.1 differs from the reference"
done
no_daemon_left "active commit"

# ---------------------------------------------------------------- stream of both
TG="offline:vda=$I/x.1.qcow2,vdb=$I/y.1.qcow2"
olm_expect 0 --json stream vda vdb
for d in x y; do
	it_assert_eq "$(chain_on_disk "$I/$d.1.qcow2")" "[\"$I/$d.1.qcow2\"]" "stream: $d's chain on disk"
	data_ok "$I/$d.1.qcow2" 0 1 2 3
	qemu-img compare -q "$T/$d.ref.raw" "$I/$d.1.qcow2" || it_fail "stream: $d.1 differs from the reference"
done
no_daemon_left stream

# ---------------------------------------------------------------- snapshot of both
olm_expect 0 --json snapshot "vda=$I/x.s.qcow2" "vdb=$I/y.s.qcow2"
for d in x y; do
	it_assert_eq "$(chain_on_disk "$I/$d.s.qcow2")" "[\"$I/$d.s.qcow2\",\"$I/$d.1.qcow2\"]" "snapshot: $d's chain on disk"
	data_ok "$I/$d.s.qcow2" 0 1 2 3
done
no_daemon_left snapshot

# ---------------------------------------------------------------- an image a QEMU holds
z=$(mk_chain "$I" z 2 $SIZE)
w=$(mk_chain "$I" w 2 $SIZE)
start_vm_blockdev vm "$z"
read -r vmpid _ <"$T/vm.pid"
sums=$(cd "$I" && sha256sum z.* w.*)
olm_expect 3 "offline:vda=$w,vdb=$z" commit vda vdb
grep -q "in use" "$T/o.err" || it_fail "held image: the refusal does not say it is in use: $(olm_report)"
grep -q "pid $vmpid (qemu-system-x86" "$T/o.err" || it_fail "held image: the holder (pid $vmpid) is not named: $(olm_report)"
it_assert_eq "$(cd "$I" && sha256sum z.* w.*)" "$sums" "held image: the images changed"
no_daemon_left "held image"
stop_vm vm

# ---------------------------------------------------------------- SIGKILL mid-commit
# 8 MiB in each top at 1 MiB/s: the jobs run for seconds; killed right after the second job's
# start is journaled (the first one runs)
for d in z w; do
	qemu_io_check "$I/$d.2.qcow2" "write -P 0x5$([[ $d == z ]] && echo a || echo b) 16M 8M"
done
TG="offline:vda=$z,vdb=$w"
sums=$(cd "$I" && sha256sum z.2.qcow2 w.2.qcow2)
killed_mid_commit "SIGKILL mid-commit" 2 0x5a 0x5b
it_assert_eq "$(cd "$I" && sha256sum z.2.qcow2 w.2.qcow2)" "$sums" "SIGKILL mid-commit: the tops changed"
olm_expect 0 recover # nothing left to do
no_daemon_left recover

# ---------------------------------------------------------------- the daemon dies mid-commit
olm_bg() {
	{ timeout -k 5 90 env TMPDIR="$T/tmp" "$LM" -c "$TG" --journal "$T/j" "$@" \
		>"$T/o.out" 2>"$T/o.err" </dev/null; } 2>/dev/null &
	BG=$!
}
olm_bg --json commit vda vdb --speed 1M
n=200
while ! grep -q '"status":"running"' "$T/o.out" 2>/dev/null && ((n-- > 0)); do sleep 0.05; done
qsd=$(pgrep -f "qemu-storage-daemon.*$T/tmp/") || it_fail "daemon dies: no daemon while the commit runs"
kill -KILL "$qsd"
rc=0
wait "$BG" || rc=$?
OLM_RC=$rc OLM_CMD="commit killed daemon"
((rc == 4)) || it_fail "daemon dies: expected exit 4: $(olm_report)"
grep -q '"outcome":4' "$T/o.out" || it_fail "daemon dies: no result with outcome 4: $(olm_report)"
no_daemon_left "daemon dies"
olm_expect 0 recover
for d in z w; do
	it_assert_eq "$(chain_on_disk "$I/$d.2.qcow2")" "[\"$I/$d.2.qcow2\",\"$I/$d.1.qcow2\",\"$I/$d.0.qcow2\"]" "daemon dies: $d's chain on disk"
	data_ok "$I/$d.2.qcow2" 0 1 2
done

# ---------------------------------------------------------------- over ssh://
ssh_setup
# the host's shell makes the daemon's directory under $T/tmp too, and runs the QEMU of the
# test's PATH (build/qemu10/bin first for QEMU 10)
ssh_start sshd "SetEnv TMPDIR=$T/tmp PATH=$PATH"
SSHO=(--known-hosts "$SSH_KH" -i "$SSH_DIR/id_client")
for d in z w; do
	qemu-img convert -O raw "$I/$d.2.qcow2" "$T/$d.ref.raw"
done
TG=$(ssh_target "/offline:vda=$z,vdb=$w")
# the daemon on the host is the QEMU under test
want=$(qemu-storage-daemon --version | sed -n '1s/.*version \([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p')
olm_expect 0 "${SSHO[@]}" --version
grep -q "^qemu $want " "$T/o.out" || it_fail "ssh: the host's daemon is not QEMU $want: $(olm_report)"
no_daemon_left "ssh: --version"
olm_expect 0 "${SSHO[@]}" --json commit vda vdb
it_assert_eq "$(files_of vda)" "[\"$I/z.1.qcow2\",\"$I/z.0.qcow2\"]" "ssh: vda's result"
for d in z w; do
	it_assert_eq "$(chain_on_disk "$I/$d.1.qcow2")" "[\"$I/$d.1.qcow2\",\"$I/$d.0.qcow2\"]" "ssh: $d's chain on disk"
	data_ok "$I/$d.1.qcow2" 0 1 2
	qemu-img compare -q "$T/$d.ref.raw" "$I/$d.1.qcow2" || it_fail "ssh: $d.1 differs from the reference"
done
no_daemon_left ssh
# SIGKILL over ssh: the daemon's exec channel ends with livemerge's connection
qemu_io_check "$I/z.1.qcow2" "write -P 0x5c 16M 8M"
qemu_io_check "$I/w.1.qcow2" "write -P 0x5d 16M 8M"
TG=$(ssh_target "/offline:vda=$I/z.1.qcow2,vdb=$I/w.1.qcow2")
killed_mid_commit "ssh: SIGKILL mid-commit" 1 0x5c 0x5d "${SSHO[@]}"
no_daemon_left "ssh: recover"
# a QEMU holds an image on the host: refused, the holder named through the host's fuser
start_vm_blockdev vm2 "$I/w.1.qcow2"
read -r vmpid _ <"$T/vm2.pid"
sums=$(cd "$I" && sha256sum z.* w.*)
olm_expect 3 "${SSHO[@]}" commit vda vdb
grep -q "pid $vmpid (qemu-system-x86" "$T/o.err" || it_fail "ssh: held image: the holder (pid $vmpid) is not named: $(olm_report)"
it_assert_eq "$(cd "$I" && sha256sum z.* w.*)" "$sums" "ssh: held image: the images changed"
no_daemon_left "ssh: held image"
stop_vm vm2
olm_expect 2 "ssh://root@127.0.0.1:$SSH_PORT/offline:vda=relative.qcow2" "${SSHO[@]}" chain
grep -q "must be absolute" "$T/o.err" || it_fail "ssh: a relative path is not refused as such: $(olm_report)"

# ---------------------------------------------------------------- bad targets and images
qemu-img create -q -f raw "$I/plain.raw" 1M
qemu-img create -q -f qcow2 "$I/nofmt.0.qcow2" 1M
qemu-img create -q -f qcow2 -b "$I/nofmt.0.qcow2" -F qcow2 "$I/nofmt.1.qcow2"
# a header naming its backing without a format (qemu-img always writes one now): the backing
# format extension's magic changed to one QEMU does not know, so it ignores it
python3 - "$I/nofmt.1.qcow2" <<'PY'
import sys
f = open(sys.argv[1], "r+b")
head = f.read(4096)
at = head.find(bytes.fromhex("e2792aca"))
assert at > 0, "no backing format extension"
f.seek(at)
f.write(bytes.fromhex("4c4d0001"))
PY
for bad in "offline:" "offline:vda" "offline:1vda=$z" "offline:vda=$z,vda=$w" \
	"offline:vda=$z,vdb=$z" "offline:vda=$I/none.qcow2" "offline:vda=$I/plain.raw"; do
	olm_expect 2 "$bad" chain
	no_daemon_left "bad target $bad"
done
mkdir "$T/empty"
OLM_ENV="PATH=$T/empty" olm_expect 3 "offline:vda=$I/x.1.qcow2" chain
grep -q "cannot start qemu-storage-daemon" "$T/o.err" || it_fail "no daemon on PATH: not said: $(olm_report)"
no_daemon_left "no daemon on PATH"
olm_expect 2 watch --volume-cmd /bin/true
grep -q "offline target's VM is stopped" "$T/o.err" || it_fail "watch: not refused as such: $(olm_report)"
echo "{\"vms\":[{\"target\":\"$TG\",\"verb\":\"commit\",\"args\":[\"vda\"]}]}" >"$T/plan.json"
olm_expect 2 batch "$T/plan.json"
grep -q "offline target is not run from a plan" "$T/o.err" || it_fail "batch: not refused as such: $(olm_report)"
no_daemon_left "watch and batch"
it_assert_eq "$(qemu-img info -U --output=json "$I/nofmt.1.qcow2" | jq -r '."backing-filename-format" // "none"')" none "the header made without a backing format"
olm_expect 2 "offline:vda=$I/nofmt.1.qcow2" chain
grep -q "without its format" "$T/o.err" || it_fail "no backing format: not refused as such: $(olm_report)"
no_daemon_left "no backing format"
it_pass
