#!/usr/bin/env bash
# test-names: file names are the guest's and QEMU's to choose, so they may hold terminal
# escape sequences, C1 controls and newlines. Against a real -blockdev VM whose images are
# named $'\e[31mred\nx.qcow2' (base) and $'\e]0;pwned\atop\t.qcow2' (active layer):
#
# 1. `chain`, a `snapshot` onto $'snap\e[1m\u009b\n.qcow2' and an active `commit` back, in
#    human mode: stdout and stderr hold no control byte but the line-ending newline (no
#    ESC, BEL, TAB, CR, DEL, no C1 control U+0080..U+009F), and the names show escaped
#    (\x1b[31mred\nx.qcow2).
# 2. With --json the same names parse back (jq) to the exact bytes: `chain --json` after
#    each step and the snapshot's --json result.
# 3. A snapshot QEMU refuses because its overlay's directory ($'no\e]0;pwned\adir') does not
#    exist: exit 1; QEMU's error text, which quotes the path, reaches stderr escaped, one
#    line.
# 4. After QEMU stops, the data written into the base reads back through the active layer.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
lm_setup

I=$T/img
base=$I/$'\e[31mred\nx.qcow2'
top=$I/$'\e]0;pwned\atop\t.qcow2'
snap=$I/$'snap\e[1m\xc2\x9b\n.qcow2'
snap2=$I/$'s2\r\x7f.qcow2'
nodir=$I/$'no\e]0;pwned\adir'/x.qcow2

qemu-img create -q -f qcow2 "$base" 64M
qemu_io_check "$base" "write -P 0x11 0 1M"
qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$top"
start_vm_blockdev vm "$top"
LM_SOCK=$T/vm.qmp

# clean WHAT: stdout and stderr of the last run hold no control character a terminal
# acts on: no byte below 0x20 but '\n', no DEL, no C1 control in its UTF-8 form.
clean() {
	local f bad
	for f in "$T/lm.out" "$T/lm.err"; do
		bad=$(LC_ALL=C tr -d '\n\040-\176\200-\377' <"$f" | od -An -tx1 | tr -s ' \n' ' ')
		[[ -z ${bad// /} ]] || it_fail "$1: raw control bytes [$bad] in ${f##*/}: $(report)"
		! LC_ALL=C grep -q $'\xc2[\x80-\x9f]' "$f" ||
			it_fail "$1: a raw C1 control in ${f##*/}: $(report)"
	done
}

# report: the last run for a failure message, its output made visible (cat -v): the
# report must not drive the terminal either.
report() {
	echo "[$(cat -v <<<"$LM_CMD")] exit $LM_RC; stderr: $(head -n 4 "$T/lm.err" | cat -v);" \
		"stdout: $(tail -n 4 "$T/lm.out" | cut -c 1-400 | cat -v)"
}

# shows WHAT FILE TEXT: FILE (lm.out or lm.err) of the last run holds TEXT literally.
shows() {
	grep -qF -- "$3" "$T/$2" || it_fail "$1: $2 lacks '$3': $(report)"
}

# names_json NAME...: the arguments as a compact JSON array, exactly (lib-merge's
# files_json splits at newlines).
names_json() {
	jq -nc '$ARGS.positional' --args "$@"
}

# json_chain_is WHAT FILE...: `chain --json vda` lists exactly FILE... (active first), byte
# for byte.
json_chain_is() {
	local what=$1 want
	shift
	want=$(names_json "$@")
	lm_ok --json chain vda
	jq -e --argjson w "$want" '[.chain[].filename] == $w' "$T/lm.out" >/dev/null ||
		it_fail "$what: chain --json is not the exact names $want: $(report)"
}

# ---- 1, 2: chain
lm_ok chain
clean "chain"
shows "chain" lm.out '\x1b[31mred\nx.qcow2'
shows "chain" lm.out '\x1b]0;pwned\x07top\t.qcow2'
it_assert_eq "$(grep -c . "$T/lm.out")" 3 "chain: lines (disk, active, base)"
json_chain_is "chain" "$top" "$base"

# ---- snapshot and commit in human mode
lm_ok snapshot "vda=$snap"
clean "snapshot"
shows "snapshot" lm.out 'snap\x1b[1m\u009b\n.qcow2'
json_chain_is "after snapshot" "$snap" "$top" "$base"

lm_ok commit vda
clean "commit"
grep -q 'livemerge-commit-vda' "$T/lm.err" || it_fail "commit: no job lines on stderr: $(report)"
shows "commit" lm.out '\x1b]0;pwned\x07top\t.qcow2'
json_chain_is "after commit" "$top" "$base"

# ---- the --json result carries the exact names too
lm_ok --json snapshot "vda=$snap2"
lm_result_json | jq -e --argjson w "$(names_json "$snap2" "$top" "$base")" \
	'[.disks[0].chain[].filename] == $w' >/dev/null ||
	it_fail "snapshot --json: result chain is not the exact names: $(report)"
json_chain_is "after the second snapshot" "$snap2" "$top" "$base"

# ---- 3: QEMU's error text quoting the name
lm_expect 1 snapshot "vda=$nodir"
clean "failed snapshot"
grep -q '^livemerge: .*no\\x1b\]0;pwned\\x07dir' "$T/lm.err" ||
	it_fail "failed snapshot: QEMU's error does not show the path escaped: $(report)"
[[ ! -e $(dirname "$nodir") ]] || it_fail "failed snapshot: its directory appeared"
json_chain_is "after the failed snapshot" "$snap2" "$top" "$base"

# ---- 4: the data
stop_vm vm
qemu_io_check -r "$snap2" "read -P 0x11 0 1M"
it_pass
