# shellcheck shell=bash
# integration/lib-ssh.sh: a private sshd for the ssh:// tests, sourced after lib.sh (uses
# only its public functions: it_*, qmp_raw).
#
# ssh_setup              keys in $T/ssh: host key, client key (authorized), a wrong key, an
#                        encrypted key (authorized, passphrase "secret"); a free port
#                        (SSH_PORT); known_hosts ($SSH_KH) with the host key; HOME=$T/home
#                        with no keys, and no SSH_AUTH_SOCK, so nothing of the machine's own
#                        ssh setup is used by accident
# ssh_start NAME [LINE...] sshd on 127.0.0.1:$SSH_PORT, config + extra sshd_config LINEs, log
#                        in $T/NAME.log (sshd -D -e), stopped by the cleanup trap; host key
#                        $SSH_HOSTKEY (default $T/ssh/host_key); SSH_SFTP=0: no sftp subsystem
# ssh_stop NAME          stop it (TERM, wait)
# ssh_target PATH        ssh://root@127.0.0.1:PORT/PATH
# ssh_accepted NAME      how many sessions sshd NAME accepted ("Accepted publickey" lines)
# ssh_fingerprint PUB    SHA256:... of a public key file, as ssh-keygen -lf prints it
# lms ARGS...            run livemerge (stdout $T/lm.out, stderr $T/lm.err, status LMS_RC)
# lms_refused WHAT ARGS  livemerge must exit 3 with one stderr line containing WHAT
# start_vm_monitors NAME N  a paused VM without disks, QMP monitors $T/NAME.qmp, NAME.qmp2..
# vm_state SOCK / vm_chain SOCK QDEV  QEMU's own view, over the local monitor

SSH_DIR=
SSH_PORT=
SSH_KH=

# ssh_free_port: a TCP port on 127.0.0.1 nothing listens on (the kernel picks it).
ssh_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ssh_setup() {
	SSH_DIR=$T/ssh
	mkdir -p "$SSH_DIR" "$T/home/.ssh" /run/sshd
	chmod 700 "$SSH_DIR" "$T/home" "$T/home/.ssh"
	ssh-keygen -q -t ed25519 -N '' -C lm-test-host -f "$SSH_DIR/host_key" || it_fail "ssh-keygen (host)"
	ssh-keygen -q -t ed25519 -N '' -C lm-test-client -f "$SSH_DIR/id_client" || it_fail "ssh-keygen (client)"
	ssh-keygen -q -t ed25519 -N '' -C lm-test-wrong -f "$SSH_DIR/id_wrong" || it_fail "ssh-keygen (wrong)"
	ssh-keygen -q -t ed25519 -N secret -C lm-test-enc -f "$SSH_DIR/id_enc" || it_fail "ssh-keygen (encrypted)"
	cat "$SSH_DIR/id_client.pub" "$SSH_DIR/id_enc.pub" >"$SSH_DIR/authorized_keys"
	SSH_PORT=$(ssh_free_port) || it_fail "no free port"
	SSH_KH=$SSH_DIR/known_hosts
	ssh_known_hosts_line "$SSH_DIR/host_key.pub" >"$SSH_KH"
	HOME=$T/home
	export HOME
	unset SSH_AUTH_SOCK SSH_AGENT_PID
}

# ssh_known_hosts_line PUB: the known_hosts line for our sshd with host key PUB.
ssh_known_hosts_line() {
	local type key _
	read -r type key _ <"$1"
	echo "[127.0.0.1]:$SSH_PORT $type $key"
}

# ssh_start NAME [LINE...]: start sshd NAME with our keys and the extra config LINEs.
ssh_start() {
	local name=$1 conf pid n=200 line
	shift
	conf=$SSH_DIR/$name.conf
	{
		echo "ListenAddress 127.0.0.1"
		echo "Port $SSH_PORT"
		echo "HostKey ${SSH_HOSTKEY:-$SSH_DIR/host_key}"
		echo "PidFile $SSH_DIR/$name.sshd.pid"
		echo "AuthorizedKeysFile $SSH_DIR/authorized_keys"
		echo "PermitRootLogin prohibit-password"
		echo "PubkeyAuthentication yes"
		echo "PasswordAuthentication no"
		echo "KbdInteractiveAuthentication no"
		echo "UsePAM no"
		# $T is under /tmp (mode 1777): StrictModes would refuse authorized_keys there
		echo "StrictModes no"
		echo "LogLevel VERBOSE"
		# SSH_SFTP=0: a hardened host without the sftp subsystem
		[[ ${SSH_SFTP:-1} == 0 ]] || echo "Subsystem sftp /usr/lib/openssh/sftp-server"
		for line; do echo "$line"; done
	} >"$conf"
	[[ ! -e $T/$name.pid ]] || it_fail "sshd $name was already started"
	/usr/sbin/sshd -t -f "$conf" 2>"$T/$name.log" || it_fail "sshd -t: $(head -n 1 "$T/$name.log")"
	/usr/sbin/sshd -f "$conf" -D -e 2>>"$T/$name.log" </dev/null &
	pid=$!
	it_track "$name" "$pid"
	while ((n-- > 0)); do
		ssh__alive "$pid" || it_fail "sshd $name exited: $(tail -n 1 "$T/$name.log")"
		if (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	it_fail "sshd $name does not listen on port $SSH_PORT within 10 s"
}

# ssh__alive PID: PID exists and is not a zombie.
ssh__alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# ssh_children NAME: the pids of sshd NAME's per-connection processes.
ssh_children() {
	local pid start
	read -r pid start <"$T/$1.pid"
	pgrep -P "$pid" || true
}

ssh_stop() {
	local name=$1 pid start c n=200
	local -a kids
	[[ -f $T/$name.pid ]] || it_fail "ssh_stop: $name was not started"
	read -r pid start <"$T/$name.pid"
	# the per-connection processes go too: a stopped sshd must not answer anything
	mapfile -t kids < <(ssh_children "$name")
	kill -TERM "$pid" 2>/dev/null || true
	for c in "${kids[@]}"; do
		kill -TERM "$c" 2>/dev/null || true
	done
	while ssh__alive "$pid" && ((n-- > 0)); do
		sleep 0.05
	done
	ssh__alive "$pid" && it_fail "ssh_stop: sshd $name still running"
	wait "$pid" 2>/dev/null || true
	rm -f -- "$T/$name.pid"
}

ssh_target() {
	echo "ssh://root@127.0.0.1:$SSH_PORT$1"
}

ssh_accepted() {
	grep -c 'Accepted publickey' "$T/$1.log" || true
}

ssh_fingerprint() {
	ssh-keygen -lf "$1" | awk '{print $2}'
}

# lms ARGS...: run livemerge ARGS (60 s at most), keep its output; never fails by itself.
lms() {
	LMS_RC=0
	LMS_CMD="livemerge $*"
	it_log "\$ $LMS_CMD"
	timeout -k 5 "${LMS_TIMEOUT:-60}" "$LM" "$@" >"$T/lm.out" 2>"$T/lm.err" </dev/null || LMS_RC=$?
	[[ ! -s $T/lm.err ]] || sed 's/^/    stderr: /' "$T/lm.err" >&2
}

lms_report() {
	echo "[$LMS_CMD] exit $LMS_RC; stderr: $(head -n 3 "$T/lm.err"); stdout: $(head -c 300 "$T/lm.out")"
}

# lms_ok ARGS...: livemerge must succeed.
lms_ok() {
	lms "$@"
	((LMS_RC == 0)) || it_fail "expected success: $(lms_report)"
}

# lms_refused WHAT ARGS...: livemerge must exit 3 with exactly one line on stderr,
# "livemerge: ...", containing WHAT.
lms_refused() {
	local what=$1 n
	shift
	lms "$@"
	((LMS_RC == 3)) || it_fail "expected exit 3: $(lms_report)"
	n=$(grep -c . "$T/lm.err" || true)
	((n == 1)) || it_fail "expected one line on stderr, got $n: $(lms_report)"
	grep -q '^livemerge: ' "$T/lm.err" || it_fail "stderr is not 'livemerge: ...': $(lms_report)"
	grep -qF -- "$what" "$T/lm.err" || it_fail "error does not say '$what': $(lms_report)"
}

# vm_state SOCK: QEMU's block state (every device's chain, every node, every job) as one
# compact JSON value, read over the local monitor: equal before and after iff unchanged.
vm_state() {
	qmp_raw "$1" '{"execute":"query-block"}' \
		'{"execute":"query-named-block-nodes","arguments":{"flat":true}}' '{"execute":"query-jobs"}' |
		jq -sc '{devices: ([.[0].return[] | {qdev, node: .inserted."node-name",
				chain: [.inserted.image | recurse(.["backing-image"]; . != null) | .filename]}] | sort),
			nodes: ([.[1].return[] | {node: ."node-name", file, backing: .backing_file}] | sort),
			jobs: .[2].return}'
}

# vm_chain SOCK QDEV: the files of QDEV's chain, active first, from QEMU (compact JSON).
vm_chain() {
	qmp_raw "$1" '{"execute":"query-block"}' |
		jq -c --arg q "/machine/peripheral/$2/virtio-backend" \
			'[.return[] | select(.qdev == $q) | .inserted.image | recurse(.["backing-image"]; . != null) | .filename]'
}

start_vm_monitors() {
	local name=$1 n=$2 i s pid tries
	local -a args=() socks=()
	for ((i = 1; i <= n; i++)); do
		s=$T/$name.qmp
		((i == 1)) || s+=$i
		socks+=("$s")
		args+=(-qmp "unix:$s,server=on,wait=off")
	done
	[[ ! -e $T/$name.pid ]] || it_fail "a process named $name was already started"
	qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none "${args[@]}" \
		>"$T/$name.out" 2>"$T/$name.err" </dev/null &
	pid=$!
	it_track "$name" "$pid"
	for s in "${socks[@]}"; do
		tries=200
		until [[ -S $s ]] && timeout 2 socat -T 2 - "UNIX-CONNECT:$s" </dev/null 2>/dev/null | grep -q '"QMP"'; do
			((tries-- > 0)) || it_fail "$name: no QMP greeting on $s within 10 s"
			ssh__alive "$pid" || it_fail "$name exited during start-up: $(head -n 1 "$T/$name.err")"
			sleep 0.05
		done
	done
}
