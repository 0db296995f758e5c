#!/usr/bin/env bash
# test-ssh: livemerge on a VM's monitor through ssh:// (libssh2, direct-streamlocal channel)
# against a private sshd on 127.0.0.1 (own config, host key, authorized_keys, known_hosts).
#
# - refusals, each one line, exit 3, QEMU's block state unchanged and no overlay created:
#   unknown host (fingerprint shown), wrong key, encrypted key without an agent, remote socket
#   missing, a server that never speaks (--ssh-timeout); later, with sshd restarted: a changed
#   host key (even with --accept-new-host-key; the SHA256 fingerprint as ssh-keygen -lf prints
#   it) and AllowStreamLocalForwarding no
# - host keys: --accept-new-host-key adds the entry to known_hosts; a hashed entry and the
#   default ~/.ssh/known_hosts work; ssh-agent holding the encrypted key works
# - through ssh: chain, snapshot of 4 disks, active commit with pivot, stream; live writes
#   through the VM between the steps; every byte checked offline after QEMU stops
# - snapshot --quiesce with monitor and qemu-ga both ssh:// (the test guest, writing): both
#   channels in one SSH session, the guest thawed after, its data checked
# - image files on the ssh host: snapshot onto an existing file refused (exit 2, the message
#   names the host, the file untouched, checked over SFTP), commit --delete removes the image
# - one SSH session per livemerge run ("Accepted publickey" in sshd's log); two monitors of
#   one VM opened by one process share one session; dropping that session fails both
#   channels and runs every pending callback exactly once (integration/ssh-channels.c)
# - throughput: 1,000 query-status round trips over ssh and over the local socket, the
#   ratio printed (not asserted)
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/lib-ssh.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-ssh.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/guest/run-guest.sh"
it_setup
it_require_lm
ssh_setup
ssh_start sshd

# the library from a small program: several channels in one process (IT_CFLAGS: e.g. the
# sanitizer flags, with LM=build/asan/livemerge)
HELPER=$T/ssh-channels
# shellcheck disable=SC2046,SC2086 # word-split pkg-config's flags and IT_CFLAGS
cc -std=gnu11 -D_GNU_SOURCE ${IT_CFLAGS:--O2} $(pkg-config --cflags json-c libssh2) -o "$HELPER" \
	"$IT_DIR/ssh-channels.c" "$(dirname "$LM")/liblivemerge.a" \
	$(pkg-config --libs json-c libssh2) -lev 2>"$T/cc.err" || it_fail "cannot build ssh-channels: $(head -n 3 "$T/cc.err")"

MIB=$IT_MIB
mkdir "$T/img"
LETTERS=abcd
TOPS=()
for ((i = 0; i < 4; i++)); do
	TOPS+=("$(mk_chain "$T/img" "d$i" 1 64M)")
done
start_vm_blockdev vm "${TOPS[@]}"
SOCK=$T/vm.qmp
TG=$(ssh_target "$SOCK")
OPTS=(--known-hosts "$SSH_KH" -i "$SSH_DIR/id_client")
HOSTFP=$(ssh_fingerprint "$SSH_DIR/host_key.pub")
REFUSED=$T/img/refused.qcow2

# refused WHAT ARGS...: a snapshot that must be refused (exit 3, one line with WHAT) with
# nothing changed on the VM and no overlay file made.
refused() {
	local what=$1 before
	shift
	before=$(vm_state "$SOCK")
	lms_refused "$what" "$@" snapshot "vda=$REFUSED"
	[[ ! -e $REFUSED ]] || it_fail "a refused run created $REFUSED: $(lms_report)"
	it_assert_eq "$(vm_state "$SOCK")" "$before" "QEMU's block state after a refused run"
}

# ---------------------------------------------------------------- refusals
: >"$T/ssh/empty_kh"
refused "is not in $T/ssh/empty_kh" --known-hosts "$T/ssh/empty_kh" -i "$SSH_DIR/id_client" -c "$TG"
grep -qF "$HOSTFP" "$T/lm.err" || it_fail "unknown host: fingerprint $HOSTFP not shown: $(lms_report)"
grep -qF -- "--accept-new-host-key" "$T/lm.err" || it_fail "unknown host: the way out is not named: $(lms_report)"
it_log "unknown host refused: $(cat "$T/lm.err")"

refused "authentication as root on [127.0.0.1]:$SSH_PORT failed" --known-hosts "$SSH_KH" \
	-i "$SSH_DIR/id_wrong" -c "$TG"
grep -qF "$SSH_DIR/id_wrong (refused)" "$T/lm.err" || it_fail "wrong key: the key tried is not listed: $(lms_report)"

refused "encrypted" --known-hosts "$SSH_KH" -i "$SSH_DIR/id_enc" -c "$TG"
grep -qF "ssh-agent" "$T/lm.err" || it_fail "encrypted key: ssh-agent not suggested: $(lms_report)"

refused "no such socket on [127.0.0.1]:$SSH_PORT: $T/nosuch.qmp" "${OPTS[@]}" -c "$(ssh_target "$T/nosuch.qmp")"

# a TCP server that never says a word: the handshake times out
SILENT_PORT=$(ssh_free_port)
socat "TCP-LISTEN:$SILENT_PORT,bind=127.0.0.1,reuseaddr,fork" SYSTEM:'sleep 30' &
it_track silent $!
for ((n = 0; n < 100; n++)); do
	(exec 3<>"/dev/tcp/127.0.0.1/$SILENT_PORT") 2>/dev/null && break
	sleep 0.05
done
start=$SECONDS
refused "within 1 s while in the SSH handshake" "${OPTS[@]}" --ssh-timeout 1 \
	-c "ssh://root@127.0.0.1:$SILENT_PORT$SOCK"
((SECONDS - start < 10)) || it_fail "--ssh-timeout 1 took $((SECONDS - start)) s"
read -r pid _ <"$T/silent.pid"
kill -TERM "$pid"
rm -f "$T/silent.pid"

# ---------------------------------------------------------------- host keys that work
accepted0=$(ssh_accepted sshd)
lms_ok --known-hosts "$T/ssh/new_kh" --accept-new-host-key -i "$SSH_DIR/id_client" -c "$TG" chain vda
it_assert_eq "$(awk '{print $1, $2, $3}' "$T/ssh/new_kh")" "$(ssh_known_hosts_line "$SSH_DIR/host_key.pub")" \
	"known_hosts written by --accept-new-host-key"
lms_ok --known-hosts "$T/ssh/new_kh" -i "$SSH_DIR/id_client" -c "$TG" chain vda
it_assert_eq "$(grep -c . "$T/ssh/new_kh")" 1 "entries in known_hosts after a second run"
it_assert_eq "$(ssh_accepted sshd)" $((accepted0 + 2)) "sshd sessions for two livemerge runs"

cp "$SSH_KH" "$T/ssh/hashed_kh"
ssh-keygen -q -H -f "$T/ssh/hashed_kh" >/dev/null 2>&1
rm -f "$T/ssh/hashed_kh.old"
grep -q '^|1|' "$T/ssh/hashed_kh" || it_fail "ssh-keygen -H made no hashed entry"
lms_ok --known-hosts "$T/ssh/hashed_kh" -i "$SSH_DIR/id_client" -c "$TG" chain vda

# the defaults: ~/.ssh/known_hosts and ~/.ssh/id_ed25519
cp "$SSH_KH" "$T/home/.ssh/known_hosts"
cp "$SSH_DIR/id_client" "$T/home/.ssh/id_ed25519"
lms_ok -c "$TG" chain vda
rm -f "$T/home/.ssh/id_ed25519"

# ssh-agent first: it holds the encrypted key, so -i of that file is not even needed
printf '#!/bin/sh\necho secret\n' >"$T/ssh/askpass"
chmod +x "$T/ssh/askpass"
ssh-agent -D -a "$T/ssh/agent.sock" >/dev/null 2>&1 &
it_track agent $!
for ((n = 0; n < 100; n++)); do
	[[ -S $T/ssh/agent.sock ]] && break
	sleep 0.05
done
SSH_AUTH_SOCK=$T/ssh/agent.sock SSH_ASKPASS=$T/ssh/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=:0 \
	ssh-add "$SSH_DIR/id_enc" </dev/null >/dev/null 2>&1 || it_fail "ssh-add of the encrypted key failed"
SSH_AUTH_SOCK=$T/ssh/agent.sock lms_ok --known-hosts "$SSH_KH" -i "$SSH_DIR/id_enc" -c "$TG" chain vda
SSH_AUTH_SOCK=$T/ssh/agent.sock lms_ok --known-hosts "$SSH_KH" -c "$TG" chain vda
grep -q "Accepted publickey for root .* ED25519 $(ssh_fingerprint "$SSH_DIR/id_enc.pub")" "$T/sshd.log" ||
	it_fail "sshd did not see the agent's key"
read -r pid _ <"$T/agent.pid"
kill -TERM "$pid"
rm -f "$T/agent.pid"

# ---------------------------------------------------------------- merges through ssh
# expected data per disk: "PATTERN OFFSET" lines, 1 MiB each
declare -A EXPECT
for ((i = 0; i < 4; i++)); do
	EXPECT[$i]="0x10 0"$'\n'"0x11 $MIB"
done
live() { # live DISK_INDEX PATTERN MIB_OFFSET
	hmp_write "$SOCK" "vd${LETTERS:$1:1}" "$2" $(($3 * MIB)) "$MIB"
	EXPECT[$1]+=$'\n'"$2 $(($3 * MIB))"
}
chain_is() { # chain_is DISK_INDEX FILE...: QEMU's view of the disk's chain
	local qdev=vd${LETTERS:$1:1} want
	shift
	want=$(printf '%s\n' "$@" | jq -R . | jq -sc .)
	it_assert_eq "$(vm_chain "$SOCK" "$qdev")" "$want" "chain of $qdev"
}

lms_ok "${OPTS[@]}" -c "$TG" --json chain
for ((i = 0; i < 4; i++)); do
	got=$(jq -c --arg d "vd${LETTERS:$i:1}" 'select(.qdev == "/machine/peripheral/\($d)/virtio-backend") | [.chain[].filename]' "$T/lm.out")
	it_assert_eq "$got" "[\"$T/img/d$i.1.qcow2\",\"$T/img/d$i.0.qcow2\"]" "livemerge chain over ssh, vd${LETTERS:$i:1}"
done

for ((i = 0; i < 4; i++)); do
	live "$i" "$(printf '0x%02x' $((0xa0 + i)))" 8
done

accepted0=$(ssh_accepted sshd)
args=()
for ((i = 0; i < 4; i++)); do args+=("vd${LETTERS:$i:1}=$T/img/d$i.s1.qcow2"); done
lms_ok "${OPTS[@]}" -c "$TG" snapshot "${args[@]}"
it_assert_eq "$(ssh_accepted sshd)" $((accepted0 + 1)) "sshd sessions for one snapshot run"
for ((i = 0; i < 4; i++)); do
	chain_is "$i" "$T/img/d$i.s1.qcow2" "$T/img/d$i.1.qcow2" "$T/img/d$i.0.qcow2"
	live "$i" "$(printf '0x%02x' $((0xb0 + i)))" 16
done

lms_ok "${OPTS[@]}" -c "$TG" commit vda vdb vdc vdd
for ((i = 0; i < 4; i++)); do
	chain_is "$i" "$T/img/d$i.1.qcow2" "$T/img/d$i.0.qcow2"
done
it_assert_eq "$(qmp_raw "$SOCK" '{"execute":"query-jobs"}' | jq -c .return)" "[]" "jobs left after commit"

args=()
for ((i = 0; i < 4; i++)); do args+=("vd${LETTERS:$i:1}=$T/img/d$i.s2.qcow2"); done
lms_ok "${OPTS[@]}" -c "$TG" snapshot "${args[@]}"
for ((i = 0; i < 4; i++)); do
	live "$i" "$(printf '0x%02x' $((0xc0 + i)))" 24
done
lms_ok "${OPTS[@]}" -c "$TG" stream vda vdb vdc vdd
for ((i = 0; i < 4; i++)); do
	chain_is "$i" "$T/img/d$i.s2.qcow2"
done
it_assert_eq "$(qmp_raw "$SOCK" '{"execute":"query-jobs"}' | jq -c .return)" "[]" "jobs left after stream"

stop_vm vm
for ((i = 0; i < 4; i++)); do
	cmds=()
	while read -r pat off; do
		[[ -n $pat ]] && cmds+=("read -P $pat $off $MIB")
	done <<<"${EXPECT[$i]}"
	cmds+=("read -P 0 $((32 * MIB)) $MIB")
	# the flattened active layer holds everything, on its own
	got=$(image_backing "$T/img/d$i.s2.qcow2")
	[[ $got == none ]] || it_fail "d$i.s2.qcow2 still has a backing file after stream: $got"
	qemu_io_check -r "$T/img/d$i.s2.qcow2" "${cmds[@]}"
	# the commit put the 16M write into layer 1
	qemu_io_check -r "$T/img/d$i.1.qcow2" "read -P $(printf '0x%02x' $((0xb0 + i))) $((16 * MIB)) $MIB"
done
it_log "data verified on 4 disks after snapshot, commit, snapshot, stream over ssh"

# ---------------------------------------------------------------- monitor + guest agent
guest_build
qemu-img create -q -f qcow2 "$T/img/g0.qcow2" 64M
guest_mkfs "$T/img/gfs.qcow2" 32M
start_guest g -f "$T/img/gfs.qcow2" "$T/img/g0.qcow2"
accepted0=$(ssh_accepted sshd)
lms_ok "${OPTS[@]}" -c "$(ssh_target "$T/g.qmp")" --json snapshot "vda=$T/img/g0.s1.qcow2" \
	"vdb=$T/img/gfs.s1.qcow2" --quiesce "$(ssh_target "$T/g.qga")"
it_assert_eq "$(ssh_accepted sshd)" $((accepted0 + 1)) "sshd sessions for monitor + guest agent in one run"
jq -e -s 'any(.[]; .type == "result" and .ok == true)' "$T/lm.out" >/dev/null ||
	it_fail "snapshot --quiesce over ssh: no ok result: $(lms_report)"
grep -qi 'frozen\|freez' "$T/lm.out" "$T/lm.err" || it_fail "snapshot --quiesce says nothing of a freeze: $(lms_report)"
reply=$(guest_qga g '{"execute":"guest-fsfreeze-status"}') || it_fail "guest-fsfreeze-status: $reply"
it_assert_eq "$(jq -r .return <<<"$reply")" thawed "guest filesystems after snapshot --quiesce over ssh"
guest_wait_ack g vda $(($(guest_last_ack g vda) + 5)) 20
stop_guest g
guest_check g vda "$T/img/g0.s1.qcow2"

# ---------------------------------------------------------------- one session, many channels
start_vm_monitors two 2
T1=$(ssh_target "$T/two.qmp")
T2=$(ssh_target "$T/two.qmp2")
HOPTS=(--known-hosts "$SSH_KH" -i "$SSH_DIR/id_client")
accepted0=$(ssh_accepted sshd)
"$HELPER" "${HOPTS[@]}" "$T1" "$T2" >"$T/h.out" 2>"$T/h.err" || it_fail "ssh-channels: $(head -n 2 "$T/h.err")"
it_assert_eq "$(jq -s '[.[] | select(.ready)] | length' "$T/h.out")" 2 "monitors ready through one process"
it_assert_eq "$(ssh_accepted sshd)" $((accepted0 + 1)) "sshd sessions for two channels in one process"

# throughput: the same monitor kind, one over ssh, one local, in one process
"$HELPER" "${HOPTS[@]}" --rounds 1000 "unix:$T/two.qmp2" "$T1" >"$T/h.out" 2>"$T/h.err" ||
	it_fail "ssh-channels --rounds: $(head -n 2 "$T/h.err")"
local_s=$(jq -r 'select(.rounds) | select(.target | startswith("unix:")) | .seconds' "$T/h.out")
ssh_s=$(jq -r 'select(.rounds) | select(.target | startswith("ssh:")) | .seconds' "$T/h.out")
ratio=$(jq -n --argjson a "$ssh_s" --argjson b "$local_s" '$a / $b * 100 | round / 100')
echo "throughput: 1000 query-status round trips: local socket $(printf %.3f "$local_s") s, ssh $(printf %.3f "$ssh_s") s, ratio ssh/local $ratio"

# a dropped session fails every channel, every pending callback runs once
"$HELPER" "${HOPTS[@]}" --until-fail 4 "$T1" "$T2" >"$T/h.out" 2>"$T/h.err" &
hpid=$!
for ((n = 0; n < 200; n++)); do
	grep -qx ready "$T/h.out" 2>/dev/null && break
	sleep 0.05
done
grep -qx ready "$T/h.out" || it_fail "ssh-channels --until-fail never got ready: $(head -n 2 "$T/h.err")"
sleep 0.3
mapfile -t kids < <(ssh_children sshd)
((${#kids[@]} > 0)) || it_fail "no sshd session process to kill"
for c in "${kids[@]}"; do kill -KILL "$c"; done
rc=0
wait "$hpid" || rc=$?
((rc == 0)) || it_fail "after the drop: a callback ran more or less than once (exit $rc): $(tail -n 2 "$T/h.out")"
grep -v '^ready$' "$T/h.out" >"$T/h.json"
it_assert_eq "$(jq -s -c '[.[] | select(.issued) | .code]' "$T/h.json")" '["eof","eof"]' \
	"error codes of the two channels after the drop"
jq -e -s 'all(.[] | select(.issued); .issued == .callbacks and .done > 0 and (.error | contains("connection to")))' \
	"$T/h.json" >/dev/null || it_fail "after the drop: $(grep issued "$T/h.json" | head -n 2)"
it_log "after the drop: $(jq -c 'select(.issued) | {issued, callbacks, error}' "$T/h.json" | head -n 1)"
stop_vm two

# ---------------------------------------------------------------- sshd changes
# (the VM is gone: the channel refusals below come before any QMP; start a fresh one)
TOPS2=("$(mk_chain "$T/img" e0 1 64M)")
start_vm_blockdev vm2 "${TOPS2[@]}"
SOCK=$T/vm2.qmp
TG=$(ssh_target "$SOCK")

# a changed host key: refused even with --accept-new-host-key, known_hosts untouched
ssh_stop sshd
ssh-keygen -q -t ed25519 -N '' -C lm-test-host2 -f "$SSH_DIR/host_key2"
SSH_HOSTKEY=$SSH_DIR/host_key2 ssh_start sshd_newkey
kh_before=$(sha256sum <"$SSH_KH")
refused "has CHANGED" "${OPTS[@]}" --accept-new-host-key -c "$TG"
newfp=$(ssh_fingerprint "$SSH_DIR/host_key2.pub")
grep -qF "ED25519 key $newfp" "$T/lm.err" || it_fail "changed key: fingerprint $newfp (ssh-keygen -lf) not shown: $(lms_report)"
it_assert_eq "$(sha256sum <"$SSH_KH")" "$kh_before" "known_hosts after a changed key was refused"
it_log "changed key refused: $(cat "$T/lm.err")"
ssh_stop sshd_newkey

# AllowStreamLocalForwarding no: sshd refuses the channel, the message says which option
ssh_start sshd_nofwd "AllowStreamLocalForwarding no"
refused "AllowStreamLocalForwarding yes" "${OPTS[@]}" -c "$TG"
it_log "forwarding refused: $(cat "$T/lm.err")"
grep -q "refused streamlocal port forward" "$T/sshd_nofwd.log" || it_fail "sshd_nofwd did not log the refusal"
ssh_stop sshd_nofwd

# and back to normal: it works again
ssh_start sshd_again
lms_ok "${OPTS[@]}" -c "$TG" chain vda

# image files are the remote host's: checked and deleted over SFTP on the monitor's session
# (same filesystem here, so the message must name the remote check, "... on HOST")
EXISTING=$T/img/e0.existing.qcow2
head -c 65536 /dev/urandom >"$EXISTING"
sum_before=$(sha256sum <"$EXISTING")
before=$(vm_state "$SOCK")
sftp0=$(grep -c "subsystem 'sftp'" "$T/sshd_again.log" || true)
lms "${OPTS[@]}" -c "$TG" snapshot "vda=$EXISTING"
((LMS_RC == 2)) || it_fail "snapshot onto an existing remote file: expected exit 2: $(lms_report)"
grep -qF "overlay $EXISTING exists already on [127.0.0.1]:$SSH_PORT" "$T/lm.err" ||
	it_fail "existing overlay: the remote check is not named: $(lms_report)"
it_assert_eq "$(sha256sum <"$EXISTING")" "$sum_before" "the existing remote file after a refused snapshot"
it_assert_eq "$(vm_state "$SOCK")" "$before" "QEMU's block state after a refused snapshot"
(($(grep -c "subsystem 'sftp'" "$T/sshd_again.log" || true) > sftp0)) ||
	it_fail "the existing overlay was not checked over SFTP"
it_log "existing remote overlay refused: $(cat "$T/lm.err")"

lms_ok "${OPTS[@]}" -c "$TG" snapshot "vda=$T/img/e0.s1.qcow2"
it_assert_eq "$(vm_chain "$SOCK" vda)" "[\"$T/img/e0.s1.qcow2\",\"$T/img/e0.1.qcow2\",\"$T/img/e0.0.qcow2\"]" \
	"chain of vda after snapshot over ssh"
lms_ok "${OPTS[@]}" -c "$TG" commit vda --delete
it_assert_eq "$(vm_chain "$SOCK" vda)" "[\"$T/img/e0.1.qcow2\",\"$T/img/e0.0.qcow2\"]" \
	"chain of vda after commit --delete over ssh"
[[ ! -e $T/img/e0.s1.qcow2 ]] || it_fail "commit --delete over ssh left $T/img/e0.s1.qcow2: $(lms_report)"
[[ -e $T/img/e0.1.qcow2 && -e $T/img/e0.0.qcow2 ]] || it_fail "commit --delete over ssh deleted a layer still in the chain"
grep -qF "deleted $T/img/e0.s1.qcow2" "$T/lm.err" "$T/lm.out" || it_fail "commit --delete says nothing of the deletion: $(lms_report)"
it_assert_eq "$(qmp_raw "$SOCK" '{"execute":"query-jobs"}' | jq -c .return)" "[]" "jobs left after commit --delete"
stop_vm vm2
ssh_stop sshd_again

it_pass
