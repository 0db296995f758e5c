#!/usr/bin/env bash
# test-fault-monitor: the monitor connection cut in the middle of a job. livemerge talks to
# QEMU through a socat proxy (a unix socket forwarding to the real QMP socket); the test
# SIGKILLs the proxy (and so the connection) while both jobs of a 2-disk merge copy, with the
# guest writing throughout:
#   1. proxy back after ~1 s, mid-commit: livemerge reconnects, takes its jobs over and
#      finishes (exit 0, chains as expected, no job left, data checked live);
#   2. the same mid-stream;
#   3. the proxy never comes back: exit 4 within bounded time (its reconnects are bounded),
#      a message that says what to run; the jobs run on in QEMU; with the proxy back,
#      `recover` cancels them (nothing finalized) and every chain is as before.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=integration/guest/run-guest.sh
. "$IT_DIR/guest/run-guest.sh"
# shellcheck source=integration/lib-fault.sh
. "$IT_DIR/lib-fault.sh"
fault_setup

for d in vda vdb; do
	qemu-img create -q -f qcow2 "$T/img/$d.0.qcow2" 24M
done
start_guest g "$T/img/vda.0.qcow2" "$T/img/vdb.0.qcow2"
PROXY=$T/px.sock
FLM_TARGET=$PROXY
PROXY_PID=

proxy_start() {
	socat "UNIX-LISTEN:$PROXY,fork,unlink-early" "UNIX-CONNECT:$T/g.qmp" 2>/dev/null </dev/null &
	PROXY_PID=$!
	it_track proxy "$PROXY_PID"
	local n=100
	until [[ -S $PROXY ]]; do
		((n-- > 0)) || it_fail "the proxy did not come up"
		sleep 0.02
	done
}

# proxy_kill: SIGKILL the proxy and its connections (socat forks one child per connection).
proxy_kill() {
	local c
	for c in $(ps -o pid= --ppid "$PROXY_PID"); do
		kill -KILL "$c" 2>/dev/null || true
	done
	kill -KILL "$PROXY_PID" 2>/dev/null || true
	wait "$PROXY_PID" 2>/dev/null || true
	rm -f "$T/proxy.pid" "$PROXY"
}

# direct_chains: chains through the real monitor (the proxy may be down).
direct_chains() {
	FLM_TARGET=$T/g.qmp fault_chains vda vdb
}

# cut_and_return VERB ARGS...: VERB vda vdb through the proxy, cut while both jobs copy, the
# proxy back 1 s later; livemerge must finish.
cut_and_return() {
	local verb=$1 before expect t0 secs
	shift
	flm_expect 0 snapshot "vda=$T/img/vda.$verb.qcow2" "vdb=$T/img/vdb.$verb.qcow2"
	fault_writing g vda vdb
	sleep 1 # data in the new overlays
	before=$(direct_chains)
	if [[ $verb == commit ]]; then
		expect=$(jq -c 'map_values(.[1:])' <<<"$before")
	else
		expect=$(jq -c 'map_values(.[0:1])' <<<"$before")
	fi
	flm_bg "$verb" vda vdb "$@"
	flm_wait_line '*"disk":"vda"*"status":"running"*' 30
	flm_wait_line '*"disk":"vdb"*"status":"running"*' 30
	proxy_kill
	t0=$(date +%s%N)
	fault_injected "monitor-cut-mid-$verb"
	sleep 1
	proxy_start
	flm_bg_wait 90
	secs=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
	((FLM_RC == 0)) || it_fail "$verb with the monitor cut for 1 s: $(flm__report)"
	flm_messages | grep -q 'monitor reconnected' || it_fail "$verb: no reconnect reported: $(flm_messages)"
	it_log "$verb: monitor cut for 1 s; livemerge reconnected and finished $secs s after the cut;" \
		"after the reconnect: $(flm_messages | sed -n '/monitor reconnected/,$p' | head -n 4 | paste -sd'|' -)"
	it_assert_eq "$(flm_result | jq -c '[.disks[] | {(.disk): [.chain[].filename]}] | add')" "$expect" \
		"$verb: the chains in the result"
	it_assert_eq "$(direct_chains)" "$expect" "$verb: the live chains after the cut"
	it_assert_eq "$(fault_jobs)" "[]" "$verb: query-jobs"
	fault_writing g vda vdb
	fault_check_live g vda vdb
}

proxy_start
t0=$SECONDS
cut_and_return commit --speed 1M
it_log "commit with a cut monitor done in $((SECONDS - t0)) s"
t0=$SECONDS
cut_and_return stream --speed 4M
it_log "stream with a cut monitor done in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- the proxy never comes back
t0=$SECONDS
flm_expect 0 snapshot "vda=$T/img/vda.gone.qcow2" "vdb=$T/img/vdb.gone.qcow2"
fault_writing g vda vdb
before=$(direct_chains)
flm_bg commit vda vdb --speed 64K
flm_wait_line '*"disk":"vda"*"status":"running","offset":[1-9]*' 30
flm_wait_line '*"disk":"vdb"*"status":"running","offset":[1-9]*' 30
proxy_kill
t1=$(date +%s%N)
fault_injected "monitor-gone-mid-commit"
flm_bg_wait 60
secs=$(awk -v ns=$(($(date +%s%N) - t1)) 'BEGIN { printf "%.1f", ns / 1e9 }')
((FLM_RC == 4)) || it_fail "commit with the monitor gone: expected exit 4: $(flm__report)"
grep -q "livemerge recover" "$T/flm.err" || it_fail "the exit-4 message does not say what to run: $(cat "$T/flm.err")"
awk -v s="$secs" 'BEGIN { exit !(s < 30) }' || it_fail "exit 4 took $secs s after the cut"
it_log "monitor gone: exit 4 after $secs s: $(head -n 1 "$T/flm.err")"
jobs=$(fault_jobs)
it_log "QEMU's jobs after livemerge gave up: $jobs"
it_assert_eq "$(jq -c '[.[].id] | sort' <<<"$jobs")" '["livemerge-commit-vda","livemerge-commit-vdb"]' \
	"the jobs run on in QEMU"
it_assert_eq "$(direct_chains)" "$before" "chains right after livemerge gave up"
proxy_start
flm_expect 0 recover
flm_messages | grep -q '^recovered: the operation is rolled back' || it_fail "recover after the monitor came back: $(flm_messages)"
it_assert_eq "$(direct_chains)" "$before" "chains after recover"
it_assert_eq "$(fault_jobs)" "[]" "query-jobs after recover"
flm_expect 0 recover
flm_messages | grep -q 'nothing to recover' || it_fail "a second recover did something: $(flm_messages)"
fault_writing g vda vdb
fault_check_live g vda vdb
it_log "monitor gone, then recover: done in $((SECONDS - t0)) s"

final=$(direct_chains)
proxy_kill
stop_guest g
grep -q '^ERR' "$T/g.ack" && it_fail "the guest's writer reported errors: $(grep -m1 '^ERR' "$T/g.ack")"
fault_check_offline g vda "$(jq -r '.vda[0]' <<<"$final")"
fault_check_offline g vdb "$(jq -r '.vdb[0]' <<<"$final")"
fault_figures
it_pass
