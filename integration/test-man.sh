#!/usr/bin/env bash
# test-man: the manual page doc/livemerge.1 is well-formed and keeps up with the tool.
#
# 1. `mandoc -T lint` says nothing about it (a notice that the system's mandoc.db index is
#    missing or stale is not about the page: mandoc found the manual it names anyway).
# 2. `man -l` renders it: NAME, SYNOPSIS and every verb's section are in its output.
# 3. Every verb `livemerge --help` lists has a section under COMMANDS, and that section is
#    there for no other word: each section's heading is a verb of --help.
# 4. Every option `livemerge VERB --help` names (--opt) is in that verb's section or in
#    OPTIONS; every option `livemerge --help` names (-c, --connect ...) is in OPTIONS.
# 5. Every long option the page names in OPTIONS or a verb's section exists: livemerge
#    takes it (the verb's parser, for OPTIONS the common one) instead of refusing it as
#    unknown; --version is livemerge's own.
# The page is read as mandoc renders it (plain text, lines as wide as they get), so a
# word split by the source's markup is still one word.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_setup
it_require_lm

page=$IT_ROOT/doc/livemerge.1
[[ -f $page ]] || it_fail "$page is missing"
command -v mandoc >/dev/null || it_fail "mandoc is not installed (make check-deps installs it)"

# ---- 1. lint
rc=0
mandoc -T lint "$page" >"$T/lint.out" 2>"$T/lint.err" || rc=$?
grep -v '^mandoc: outdated mandoc.db ' "$T/lint.err" >>"$T/lint.out" || true
if [[ -s $T/lint.out || $rc -ne 0 ]]; then
	cat "$T/lint.out" >&2
	it_fail "mandoc -T lint: exit $rc, $(grep -c . "$T/lint.out") message(s), the first: $(head -n 1 "$T/lint.out")"
fi

# ---- the page as text: one file per section (S-NAME) and per verb's subsection (V-VERB)
mandoc -T ascii -O width=1000 "$page" | sed 's/.\x08//g' >"$T/page.txt"
awk -v dir="$T" '
	/^[A-Z][A-Z ]*$/ { sect = $0; gsub(/ /, "_", sect); out = dir "/S-" sect; verb = ""; print "" >out; next }
	/^   [^ ]/ && sect == "COMMANDS" { verb = $1; out = dir "/V-" verb; print >out; print verb >(dir "/verbs-page"); next }
	out != "" { print >out }
' "$T/page.txt"
for s in NAME SYNOPSIS OPTIONS COMMANDS ENVIRONMENT FILES EXIT_STATUS EXAMPLES SEE_ALSO; do
	[[ -s $T/S-$s ]] || it_fail "the page has no section $s"
done

# ---- 2. man renders it
if command -v man >/dev/null; then
	MANPAGER=cat MANWIDTH=80 man -l "$page" >"$T/man.txt" 2>"$T/man.err" ||
		it_fail "man -l $page: exit $? ($(head -n 1 "$T/man.err"))"
	for w in NAME SYNOPSIS COMMANDS 'EXIT STATUS' 'SEE ALSO'; do
		grep -q "^$w\$" "$T/man.txt" || it_fail "man -l shows no $w heading"
	done
	grep -q 'livemerge .* snapshot and merge the disks of running QEMU VMs' "$T/man.txt" ||
		it_fail "man -l shows no NAME line"
else
	it_skip_case man-l "man is not installed"
fi

# ---- 3. verbs
"$LM" --help >"$T/help" || it_fail "livemerge --help: exit $?"
sed -n '/^Verbs:/,/^$/s/^  \([a-z][a-z-]*\)  .*/\1/p' "$T/help" >"$T/verbs-help"
nverbs=$(grep -c . "$T/verbs-help" || true)
((nverbs >= 12)) || it_fail "livemerge --help lists $nverbs verbs; parsed wrong?"
while read -r v; do
	[[ -s $T/V-$v ]] || it_fail "verb $v (livemerge --help) has no section under COMMANDS"
	[[ ! -f $T/man.txt ]] || grep -qE "^   $v( |\$)" "$T/man.txt" ||
		it_fail "man -l shows no section for verb $v"
done <"$T/verbs-help"
while read -r v; do
	grep -qx -- "$v" "$T/verbs-help" || it_fail "the page's COMMANDS has a section '$v', which is no verb of livemerge --help"
done <"$T/verbs-page"

# names FILE WORD: WORD (an option) stands as a word of its own in FILE
names() {
	grep -qE -- "(^|[^A-Za-z0-9-])$2([^A-Za-z0-9-]|\$)" "$1"
}

# ---- 4. options --help names
checked=0
grep -oE -- '(^|[ ,])-[a-z](,| )|--[a-z][a-z0-9-]*' "$T/help" | tr -d ' ,' | sort -u >"$T/opts-main"
while read -r o; do
	names "$T/S-OPTIONS" "$o" || it_fail "option $o (livemerge --help) is not in OPTIONS"
	checked=$((checked + 1))
done <"$T/opts-main"
while read -r v; do
	"$LM" "$v" --help >"$T/help-$v" || it_fail "livemerge $v --help: exit $?"
	{ grep -oE -- '--[a-z][a-z0-9-]*' "$T/help-$v" || true; } | sort -u >"$T/opts-$v"
	while read -r o; do
		names "$T/V-$v" "$o" || names "$T/S-OPTIONS" "$o" ||
			it_fail "option $o (livemerge $v --help) is in neither the section of $v nor OPTIONS"
		checked=$((checked + 1))
	done <"$T/opts-$v"
done <"$T/verbs-help"
((checked >= 40)) || it_fail "only $checked options found in the help texts; parsed wrong?"
it_log "$nverbs verbs, $checked options of the help texts found in the page"

# ---- 5. every option the page names exists
# takes VERB OPT: livemerge's parser for VERB knows OPT. getopt refuses an unknown one
# before --help is looked at ("bad or incomplete option"); a known one given a value
# it takes (--opt=1) or none (--opt) gets to --help. No target: nothing is reached.
takes() {
	local v=$1 o=$2 form
	for form in "$o=1" "$o"; do
		if ! env -u LIVEMERGE_CONNECT timeout 20 "$LM" "$v" "$form" --help --journal "$T/journal" \
			</dev/null >"$T/takes.out" 2>"$T/takes.err"; then
			grep -q "bad or incomplete option '$form'" "$T/takes.err" && continue
		fi
		return 0
	done
	return 1
}
named=0
{ grep -oE -- '--[a-z][a-z0-9-]*' "$T/S-OPTIONS" || true; } | sort -u >"$T/page-opts-common"
while read -r o; do
	if [[ $o == --version ]]; then
		"$LM" --version >/dev/null || it_fail "the page names --version; livemerge --version: exit $?"
	else
		takes jobs "$o" || it_fail "the page's OPTIONS name $o, which livemerge does not take"
	fi
	named=$((named + 1))
done <"$T/page-opts-common"
while read -r v; do
	{ grep -oE -- '--[a-z][a-z0-9-]*' "$T/V-$v" || true; } | sort -u >"$T/page-opts-$v"
	while read -r o; do
		takes "$v" "$o" || it_fail "the section of $v names $o, which livemerge $v does not take"
		named=$((named + 1))
	done <"$T/page-opts-$v"
done <"$T/verbs-page"
it_log "$named options the page names are all taken by livemerge"

it_pass
