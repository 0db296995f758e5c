#!/usr/bin/env bash
# test-host-ssh: the host layer (host/) against a real sshd on 127.0.0.1, in the four ways a
# host can be set up, through integration/host-ops.c (liblivemerge's host_look, host_remove,
# host_run, all started at once on one loop):
#
# 1. sftp and exec: files over SFTP (a regular file's first bytes, a block device's, a
#    symlink not followed, a directory, a missing path; removal, gone already; a directory's
#    entries with their kinds, a missing directory refused); programs over
#    exec: exit status, stdout, the last stderr line, words with spaces and quotes reaching
#    the program as they are; a time limit stops the program on the host (SIGTERM through
#    the end of its stdin); while a program runs 3 s, the same loop keeps answering QMP round
#    trips on the monitor channel of the same session (nothing blocks).
# 2. no sftp subsystem: the same file answers through the shell.
# 3. ForceCommand internal-sftp (SFTP only): files answer, a program is refused (UNSUPPORTED).
# 4. ForceCommand /bin/false (neither): everything is refused as UNSUPPORTED, nothing hangs.
# The same operations on this machine (a unix target) give the same answers.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-ssh.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-ssh.sh"
it_setup
it_require_lm
ssh_setup

# enum lm_err_code (common/lm-error.h)
E_IO=1 E_TIMEOUT=4 E_UNSUPPORTED=12
HELPER=$T/host-ops
cc -std=gnu11 -D_GNU_SOURCE -I"$IT_DIR/.." $(pkg-config --cflags json-c) -o "$HELPER" \
	"$IT_DIR/host-ops.c" "$(dirname "$LM")/liblivemerge.a" \
	$(pkg-config --libs json-c libssh2) -lev 2>"$T/cc.err" || it_fail "cannot build host-ops: $(head -n 3 "$T/cc.err")"

start_vm_monitors vm 1
TG=$(ssh_target "$T/vm.qmp")
HOPTS=(-i "$SSH_DIR/id_client" --known-hosts "$SSH_KH")
D=$T/files
mkdir -p "$D/dir"
printf 'QFI\xfb-header-bytes' >"$D/img"
ln -s "$D/img" "$D/link"
head -c 1M /dev/urandom >"$D/dev.bin"
LOOP=$(losetup -f --show "$D/dev.bin") || it_fail "losetup"
it_on_exit "losetup -d $LOOP"
# a directory to list: every kind, a hidden name, a name with a newline, a device node
mkdir -p "$D/listed/sub"
printf 'QFI\xfb' >"$D/listed/a.qcow2"
printf 'x' >"$D/listed/.hidden"
printf 'x' >"$D/listed/new
line"
ln -s "$LOOP" "$D/listed/vol"
mknod "$D/listed/blk" b "$(stat -c '%t' "$LOOP" | xargs printf '%d')" "$(stat -c '%T' "$LOOP" | xargs printf '%d')"
LISTED='.hidden regular|a.qcow2 regular|blk block|new\nline regular|sub other|vol symlink'

# ops TARGET OUT OP...: run host-ops, its lines in OUT; fails the test unless it exits 0.
ops() {
	local tg=$1 out=$2
	shift 2
	"$HELPER" "${HOPTS[@]}" "$tg" "$@" >"$out" 2>"$out.err" ||
		it_fail "host-ops $*: exit $?: $(head -n 3 "$out.err")"
}

# field OUT I JQ: field of line I (op I) of OUT.
field() {
	jq -r --argjson i "$2" "select(.op == \$i) | $3" "$1"
}

# files_round NAME TARGET: look and remove, checked against the files themselves.
files_round() {
	local name=$1 tg=$2 out=$T/$1.files
	printf 'x' >"$D/gone"
	ops "$tg" "$out" look "$D/img" 4 -- look "$D/img" 0 -- look "$D/link" 4 -- \
		look "$D/dir" 4 -- look "$D/missing" 4 -- look "$LOOP" 16 -- \
		remove "$D/gone" -- remove "$D/never-was"
	# (a run of its own: SFTP exchanges take turns on a session, each within its time limit)
	ops "$tg" "$out.list" list "$D/listed" -- list "$D/missing"
	it_assert_eq "$(field "$out" 0 '.kind + " " + .head')" "regular 514649fb" "$name: a file's first bytes"
	it_assert_eq "$(field "$out" 1 '.kind + " " + .head')" "regular " "$name: a file's kind alone"
	it_assert_eq "$(field "$out" 2 '.kind + " " + .head')" "symlink " "$name: a symlink, not followed"
	it_assert_eq "$(field "$out" 3 '.kind')" "other" "$name: a directory"
	it_assert_eq "$(field "$out" 4 '.kind')" "none" "$name: a missing path"
	it_assert_eq "$(field "$out" 5 '.kind + " " + .head')" "block $(head -c 16 "$LOOP" | od -An -tx1 | tr -d ' \n')" \
		"$name: a block device's first bytes"
	it_assert_eq "$(field "$out" 6 '.error // "ok"')" "ok" "$name: remove"
	[[ ! -e $D/gone ]] || it_fail "$name: the removed file is still there"
	it_assert_eq "$(field "$out" 7 '.error // "ok"')" "ok" "$name: remove of a missing file"
	[[ -f $D/img && -L $D/link ]] || it_fail "$name: a file that was only looked at changed"
	it_assert_eq "$(field "$out.list" 0 '[.entries[] | "\(.name | gsub("\n"; "\\n")) \(.kind)"] | join("|")')" \
		"$LISTED" "$name: a directory's entries and their kinds"
	it_assert_eq "$(field "$out.list" 1 '.code')" $E_IO "$name: a missing directory (IO)"
}

# runs_round NAME TARGET: programs, their status, output and time limit.
runs_round() {
	local name=$1 tg=$2 out=$T/$1.runs pid n
	rm -f "$T/slow.pid"
	ops "$tg" "$out" run 10 sh -c 'echo out; echo first >&2; printf "last line\n\n" >&2; exit 7' -- \
		run 10 printf '%s|' 'a b' "it's" '$HOME' ';true' -- \
		run 6 sh -c "echo \$\$ >$T/slow.pid; exec sleep 30" -- \
		run 10 /nonexistent/volume-cmd create
	it_assert_eq "$(field "$out" 0 '"\(.status) \(.out) \(.err_last)"')" "7 out
 last line" "$name: status, stdout and the last stderr line"
	it_assert_eq "$(field "$out" 1 '.out')" "a b|it's|\$HOME|;true|" "$name: words reach the program as they are"
	it_assert_eq "$(field "$out" 2 '.code')" $E_TIMEOUT "$name: a program past its time limit (TIMEOUT)"
	field "$out" 2 '.error' | grep -q 'no end within 6 s' || it_fail "$name: the time limit's message: $(field "$out" 2 .error)"
	[[ $(field "$out" 2 '.ms | floor') -lt 9000 ]] || it_fail "$name: the time limit ended after $(field "$out" 2 .ms) ms"
	[[ -s $T/slow.pid ]] || it_fail "$name: the slow program never started (channel opens slower than 6 s?)"
	pid=$(cat "$T/slow.pid")
	n=100
	while it__alive "$pid" && ((n-- > 0)); do sleep 0.05; done
	it__alive "$pid" && it_fail "$name: the program stopped by its time limit still runs on the host (pid $pid)"
	[[ $(field "$out" 3 '.status // .code') != 0 ]] || it_fail "$name: a missing program succeeded"
}

# ---------------------------------------------------------------- this machine
files_round local "$T/vm.qmp"
runs_round local "$T/vm.qmp"
it_assert_eq "$(field "$T/local.runs" 3 '.code')" $E_IO "local: a program that cannot start (IO)"

# ---------------------------------------------------------------- 1. sftp and exec
ssh_start full
files_round full "$TG"
runs_round full "$TG"
it_assert_eq "$(field "$T/full.runs" 3 '.status')" 127 "full: a missing program: the shell's 127"
# nothing blocks: QMP round trips on the monitor channel while a program runs 3 s
"$HELPER" "${HOPTS[@]}" --ping "$TG" run 10 sleep 3 >"$T/full.ping" 2>"$T/full.ping.err" ||
	it_fail "host-ops --ping: $(head -n 3 "$T/full.ping.err")"
pings=$(jq -r 'select(.pings) | .pings' "$T/full.ping")
maxms=$(jq -r 'select(.pings) | .max_ms | floor' "$T/full.ping")
it_log "while a remote program ran 3 s: $pings QMP round trips on the same session, the slowest $maxms ms"
((pings >= 20)) || it_fail "full: only $pings QMP round trips while a remote program ran 3 s"
((maxms < 1000)) || it_fail "full: a QMP round trip took $maxms ms while a remote program ran"
ssh_stop full

# ---------------------------------------------------------------- 2. no sftp subsystem
SSH_SFTP=0 ssh_start nosftp
files_round nosftp "$TG"
runs_round nosftp "$TG"
ssh_stop nosftp

# ---------------------------------------------------------------- 3. SFTP only
ssh_start sftponly "ForceCommand internal-sftp"
files_round sftponly "$TG"
ops "$TG" "$T/sftponly.runs" run 10 true
it_assert_eq "$(field "$T/sftponly.runs" 0 '.code')" $E_UNSUPPORTED "sftp only: a program is refused (UNSUPPORTED)"
field "$T/sftponly.runs" 0 '.error' | grep -q 'no exec channel' || it_fail "sftp only: the refusal's message: $(field "$T/sftponly.runs" 0 .error)"
ssh_stop sftponly

# ---------------------------------------------------------------- 4. neither
SSH_SFTP=0 ssh_start bare "ForceCommand /bin/false"
printf 'x' >"$D/stays"
ops "$TG" "$T/bare.out" look "$D/img" 4 -- remove "$D/stays" -- run 10 true
for i in 0 1 2; do
	it_assert_eq "$(field "$T/bare.out" "$i" '.code')" $E_UNSUPPORTED "bare: operation $i refused (UNSUPPORTED)"
done
field "$T/bare.out" 1 '.error' | grep -q 'neither SFTP nor' || it_fail "bare: the refusal's message: $(field "$T/bare.out" 1 .error)"
[[ -f $D/stays ]] || it_fail "bare: a file was removed though the host offers no way to"
ssh_stop bare
it_pass
