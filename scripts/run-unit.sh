#!/bin/sh
# Run cmocka unit test binaries, show their output, fail if any fails.
# usage: scripts/run-unit.sh TEST...
#
# Each test runs from the top of the tree (tests find tests/fixtures/ there;
# LM_FIXTURES overrides), one after the other, with its output as it comes.
# A test that exits non-zero, or is killed, counts as failed; the closing
# line names every failed binary.
set -u
[ $# -gt 0 ] || { echo "usage: $0 TEST..." >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
failed=
n=0
for t in "$@"; do
	case $t in /*) path=$t ;; *) path=$PWD/$t ;; esac
	n=$((n + 1))
	if [ ! -x "$path" ]; then
		echo "run-unit: $t: no such executable" >&2
		failed="$failed $t"
		continue
	fi
	echo "== $t"
	(cd "$top" && "$path")
	rc=$?
	if [ $rc -ne 0 ]; then
		if [ $rc -gt 128 ]; then
			echo "run-unit: $t: killed by signal $((rc - 128))" >&2
		else
			echo "run-unit: $t: exit status $rc" >&2
		fi
		failed="$failed $t"
	fi
done
if [ -n "$failed" ]; then
	echo "run-unit: FAILED:$failed" >&2
	exit 1
fi
echo "run-unit: all $n test binaries passed"
