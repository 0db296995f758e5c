#!/usr/bin/env bash
# test-hostile: a monitor that sends hostile bytes gets a clean exit 3, in
# bounded time and bounded memory, never a crash: garbage, a 100 MiB message,
# nesting 100,000 deep, a greeting that never ends, replies with ids never
# sent, a greeting at one byte a second. The "monitor" is a scripted socat
# server (no real QEMU can be made to do these).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
it_setup
it_require_lm

GREETING='{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}'

# serve NAME SCRIPT: a one-connection server on $T/NAME.sock running bash SCRIPT
# with the client's bytes on its stdin and its stdout going to the client.
serve() {
	printf '%s\n' "$2" >"$T/$1.sh"
	rm -f "$T/$1.sock"
	socat "UNIX-LISTEN:$T/$1.sock" "EXEC:bash $T/$1.sh" 2>/dev/null &
	it_track "srv-$1" $!
	for _ in $(seq 50); do [[ -S $T/$1.sock ]] && return; sleep 0.1; done
	it_fail "$1: the scripted server did not come up"
}

# hostile NAME MAXSECS MAXRSS_KB WANT_TEXT: run 'chain' against it; exit 3, within
# MAXSECS, peak RSS under MAXRSS_KB, one line on stderr containing WANT_TEXT.
hostile() {
	local name=$1 maxs=$2 maxkb=$3 want=$4 t0 t1 rc kb
	t0=$(date +%s.%N)
	rc=0
	/usr/bin/time -f '%M' -o "$T/$name.rss" "$LM" --timeout 3 -c "unix:$T/$name.sock" chain \
		>"$T/$name.out" 2>"$T/$name.err" || rc=$?
	t1=$(date +%s.%N)
	it_assert_eq "$rc" 3 "$name: exit code ($(head -c 300 "$T/$name.err"))"
	kb=$(tail -n 1 "$T/$name.rss")
	(($(echo "$t1 - $t0 < $maxs" | bc))) || it_fail "$name: took $(echo "$t1 - $t0" | bc) s (limit $maxs)"
	((kb < maxkb)) || it_fail "$name: peak RSS $kb KiB (limit $maxkb)"
	it_assert_eq "$(grep -c . "$T/$name.err")" 1 "$name: lines on stderr"
	grep -q "$want" "$T/$name.err" || it_fail "$name: stderr lacks '$want': $(cat "$T/$name.err")"
	it_log "$name: exit 3 in $(printf %.2f "$(echo "$t1 - $t0" | bc)") s, peak RSS $kb KiB: $(cat "$T/$name.err")"
}

export GREETING
serve garbage 'printf "%s\n" "this is not QMP at all"; sleep 10'
hostile garbage 5 65536 "protocol error"

serve huge 'printf "%s\n" "$GREETING"; read -r _; printf "{\"return\": \""; head -c 104857600 /dev/zero | tr "\0" A; sleep 10'
hostile huge 30 262144 "larger than the limit"

serve deep 'printf "%s\n" "$GREETING"; read -r _; printf "{\"return\": "; head -c 100000 /dev/zero | tr "\0" "["; sleep 10'
hostile deep 5 65536 "deeper than the limit"

serve endless 'printf "{\"QMP\": {\"version\": "; sleep 30'
hostile endless 6 65536 "timed out"

serve badid 'printf "%s\n" "$GREETING"; read -r _; printf "{\"return\": {}, \"id\": 999}\n"; sleep 10'
hostile badid 5 65536 "id we never sent"

serve slow 'g=$GREETING; for ((i = 0; i < ${#g}; i++)); do printf "%s" "${g:i:1}"; sleep 1; done'
hostile slow 6 65536 "timed out"

serve eof 'printf "%s" "{\"QMP\": {\"vers"'
hostile eof 5 65536 "closed"

it_pass
