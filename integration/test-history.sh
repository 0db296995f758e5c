#!/usr/bin/env bash
# test-history: `livemerge history` against a real -blockdev VM with 2 disks (vda: a chain of
# depth 1, vdb: one layer).
#
# 1. snapshot, active commit, stream (flatten), snapshot, then a commit SIGKILLed right after
#    its finalize was journaled and `livemerge recover` finishing it: after each, `history
#    --json` shows one more chain state, oldest first, with the operation (verb, target; the
#    recover names the commit it finished) and each disk's chain as QEMU has it (files,
#    formats, backing links, virtual size, what holds each layer and its size); the data is
#    read back live (qemu-io read -P through the device) after each step.
# 2. `history vdb` shows vdb alone in every state; `history nosuch` is refused (exit 2, one
#    line); the text output lists each state once, its files escaped.
# 3. Compaction forced (LIVEMERGE_JOURNAL_COMPACT=0) on the next snapshot: the journal keeps
#    the last operation alone, the history file every state, and `history` shows the states
#    before exactly as before, plus the new one.
# 4. A commit whose compaction is SIGKILLed (crash point compact-write: the new journal
#    written and synced, not yet renamed): nothing is lost, recover has nothing to do, and
#    the next compaction finishes.
# 5. An overlay whose name holds an escape sequence: `history` escapes it, --json keeps it.
# Offline at the end: every pattern through the final chain (read -P, qemu-img compare).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
lm_setup

SIZE=64M
I=$T/img
a=$(mk_chain "$I" a 1 $SIZE)
b=$(mk_chain "$I" b 0 $SIZE)
exp_chain a 1
exp_chain b 0
start_vm_blockdev vm "$a" "$b"
LM_SOCK=$T/vm.qmp
export LIVEMERGE_JOURNAL_COMPACT=1000000000 # no compaction until section 3

# history_json: the state lines of `history --json` (the result line checked), one a line.
history_json() {
	lm_ok --json history "$@"
	it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome, .verb]')" '[true,0,"history"]' "history: result"
	jq -c 'select(.type == "state")' "$T/lm.out"
}

# assert_state N VERB VDA-FILE...: the history has N states; the last is VERB's, by this
# monitor, vda's chain is VDA-FILE... and vdb's is b's one layer; every layer's backing link
# names the next layer, the base has none; formats, virtual sizes and holders are the images'.
assert_state() {
	local n=$1 verb=$2 got last want f info
	shift 2
	got=$(history_json)
	it_assert_eq "$(grep -c . <<<"$got")" "$n" "history: number of states after $verb"
	it_assert_eq "$(jq -sc 'map(.op) | . == sort' <<<"$got")" true "history: states oldest first"
	last=$(tail -n 1 <<<"$got")
	it_assert_eq "$(jq -c '[.verb, .target, .outcome]' <<<"$last")" "[\"$verb\",\"$LM_SOCK\",0]" \
		"history: the operation of state $n"
	want=$(files_json "$@")
	it_assert_eq "$(jq -c '.disks[] | select(.disk == "vda") | [.chain[].filename]' <<<"$last")" "$want" \
		"history: vda's chain in state $n"
	it_assert_eq "$(jq -c '.disks[] | select(.disk == "vdb") | [.chain[].filename]' <<<"$last")" "[\"$b\"]" \
		"history: vdb's chain in state $n"
	it_assert_eq "$(jq -c '[.disks[] | .chain as $c | range($c | length) | $c[.]["backing-filename"] == ($c[. + 1].filename // null)] | all' <<<"$last")" \
		true "history: each layer's backing file is the next layer (state $n)"
	for f in "$@" "$b"; do
		info=$(qemu-img info -U --output=json "$f") || it_fail "qemu-img info $f: $info"
		it_assert_eq "$(jq -c --arg f "$f" '[.disks[].chain[] | select(.filename == $f) | [.format, ."virtual-size", .type, (.size > 0)]] | .[0]' <<<"$last")" \
			"$(jq -c '[.format, ."virtual-size", "file", true]' <<<"$info")" "history: format, size, holder of $f"
	done
	live_check vm vda:a vdb:b
}

# ---- 1. an operation of each kind, and a recover
lm_ok --json snapshot "vda=$I/a.s1.qcow2"
live_write vm vda a 0xa1 8M 1M
assert_state 1 snapshot "$I/a.s1.qcow2" "$I/a.1.qcow2" "$I/a.0.qcow2"

lm_ok --json commit vda
live_write vm vda a 0xa2 9M 1M
assert_state 2 commit "$I/a.1.qcow2" "$I/a.0.qcow2"

lm_ok --json stream vda
live_write vm vda a 0xa3 10M 1M
assert_state 3 stream "$I/a.1.qcow2"

lm_ok --json snapshot "vda=$I/a.s2.qcow2" "vdb=$I/b.s2.qcow2"
live_write vm vdb b 0xb1 8M 1M
# vdb has two layers now: state 4's vdb is checked by hand
got=$(history_json | tail -n 1)
it_assert_eq "$(jq -c '.disks[] | select(.disk == "vdb") | [.chain[].filename]' <<<"$got")" \
	"$(files_json "$I/b.s2.qcow2" "$b")" "history: vdb's chain in state 4"
lm_ok --json commit vdb
live_write vm vda a 0xa4 11M 1M

# a commit of vda killed right after its finalize is journaled; recover finishes it
LIVEMERGE_CRASH_AT=finalize lm --json commit vda
((LM_RC == 137)) || it_fail "commit with LIVEMERGE_CRASH_AT=finalize: expected SIGKILL (137): $(lm_report)"
before=$(history_json)
it_assert_eq "$(grep -c . <<<"$before")" 5 "history: the killed commit recorded no state"
lm_ok --json recover
it_assert_eq "$(lm_result_json | jq -c '[.ok, .outcome]')" '[true,0]' "recover: result"
assert_state 6 recover "$I/a.1.qcow2"
last=$(history_json | tail -n 1)
it_assert_eq "$(jq -c '[.of, .recovered]' <<<"$last")" '["commit","finished"]' "history: what the recover finished"
live_write vm vda a 0xa5 12M 1M
live_check vm vda:a vdb:b

# ---- 2. one disk; a disk no state names; text
got=$(history_json vdb)
it_assert_eq "$(jq -sc 'map([.disks[].disk]) | unique' <<<"$got")" '[["vdb"]]' "history vdb: vdb alone"
it_assert_eq "$(grep -c . <<<"$got")" 6 "history vdb: every state"
lm_expect 2 history nosuch
lm_one_line_error "nosuch"
lm_ok history
it_assert_eq "$(grep -cE '^#[0-9]+  ' "$T/lm.out")" 6 "history (text): a heading per state"
grep -qF "recover of a commit (finished)" "$T/lm.out" || it_fail "history (text): no recover line: $(lm_report)"
grep -qF "$I/a.s1.qcow2  qcow2  64 MiB  file" "$T/lm.out" || it_fail "history (text): no layer line: $(lm_report)"

# ---- 3. forced compaction
J=$(echo "$T"/state/livemerge/*.journal)
H=${J%.journal}.history
[[ -f $J && ! -e $H ]] || it_fail "journal $J, no history file yet expected"
before=$(history_json)
(($(wc -l <"$J") > 20)) || it_fail "journal: only $(wc -l <"$J") lines before compaction"
LIVEMERGE_JOURNAL_COMPACT=0 lm_ok --json snapshot "vda=$I/a.s3.qcow2"
live_write vm vda a 0xa6 13M 1M
after=$(history_json)
it_assert_eq "$(head -n 6 <<<"$after")" "$before" "history after compaction: the states before, unchanged"
assert_state 7 snapshot "$I/a.s3.qcow2" "$I/a.1.qcow2"
it_assert_eq "$(jq -c .op "$J" | sort -u | jq -sc .)" '[7]' "compacted journal: the last operation alone"
it_assert_eq "$(jq -sc "map(.op)" "$H")" "[1,2,3,4,5,6,7]" "history file: every chain state"

# ---- 4. a compaction killed before its rename loses nothing
before=$(history_json)
jt=$(cat "$J")
LIVEMERGE_JOURNAL_COMPACT=0 LIVEMERGE_CRASH_AT=compact-write lm --json commit vda
((LM_RC == 137)) || it_fail "commit with LIVEMERGE_CRASH_AT=compact-write: expected SIGKILL (137): $(lm_report)"
[[ -f $J.tmp ]] || it_fail "no $J.tmp left by the killed compaction"
it_assert_eq "$(head -c ${#jt} "$J")" "$jt" "journal after the killed compaction: its old lines"
got=$(history_json)
it_assert_eq "$(head -n 7 <<<"$got")" "$before" "history after a killed compaction: the states before"
assert_state 8 commit "$I/a.1.qcow2"
lm_ok recover
grep -qF "nothing to recover" "$T/lm.err" || it_fail "recover after the killed compaction: $(lm_report)"
live_write vm vda a 0xa7 14M 1M
LIVEMERGE_JOURNAL_COMPACT=0 lm_ok --json snapshot "vda=$I/a.s4.qcow2"
assert_state 9 snapshot "$I/a.s4.qcow2" "$I/a.1.qcow2"
it_assert_eq "$(jq -c .op "$J" | sort -u | jq -sc .)" '[9]' "journal compacted again: the last operation alone"
it_assert_eq "$(jq -sc 'map(.op)' "$H")" '[1,2,3,4,5,6,7,8,9]' "history file: every chain state, once"
[[ ! -e $J.tmp ]] || it_fail "$J.tmp left after a compaction that finished"

# ---- a file name with a control character: escaped in the text, exact in JSON
esc=$I/a.s5$'\e'"[31m.qcow2"
lm_ok --json snapshot "vda=$esc"
live_write vm vda a 0xa8 15M 1M
live_check vm vda:a vdb:b
lm_ok history vda
grep -qF "$I/a.s5\x1b[31m.qcow2  qcow2" "$T/lm.out" || it_fail "history (text): the name not escaped: $(lm_report)"
! grep -q $'\e' "$T/lm.out" || it_fail "history (text): a raw ESC byte on stdout"
got=$(history_json vda | tail -n 1)
it_assert_eq "$(jq -r '.disks[0].chain[0].filename' <<<"$got")" "$esc" "history --json: the name exact"

# ---- offline
stop_vm vm
check_offline a "$esc" $SIZE
check_offline b "$b" $SIZE
it_pass
