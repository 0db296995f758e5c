#!/usr/bin/env bash
# make check: unit tests, the same under ASan+UBSan, bounded fuzzing, and the
# integration tests against real QEMU; ends with one tally line:
#     check: N passed, N failed, N skipped
# A skipped test or case (cmocka's skip(), an integration test's SKIP line) is counted as
# skipped, never as passed.
set -u
cd "$(dirname "$0")/.."
mkdir -p build
pass=0
fail=0
skip=0

# stage NAME COMMAND...: run it, show its output, add its counts to the tally
stage() {
	local name=$1 log=build/check-$1.log rc p f s
	shift
	echo "== $name: $*"
	"$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	# cmocka: "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)"; ours: "N passed, N failed"
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p; s/^\([a-z]*: \)\{0,1\}\([0-9]*\) passed, [0-9]* failed.*/\2/p' "$log" |
		awk '{s+=$1} END {print s+0}')
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p; s/^\([a-z]*: \)\{0,1\}[0-9]* passed, \([0-9]*\) failed.*/\2/p' "$log" |
		awk '{s+=$1} END {print s+0}')
	# cmocka: "[  SKIPPED ] N test(s), listed below:"; ours: "N passed, N failed, N skipped"
	s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p; s/^\([a-z]*: \)\{0,1\}[0-9]* passed, [0-9]* failed, \([0-9]*\) skipped.*/\2/p' "$log" |
		awk '{s+=$1} END {print s+0}')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		echo "== $name: exited $rc"
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	skip=$((skip + s))
	echo "== $name: $p passed, $f failed, $s skipped"
}

stage unit make --no-print-directory unit
stage asan make --no-print-directory asan
stage fuzz make --no-print-directory fuzz-check FUZZ_SECONDS="${FUZZ_SECONDS:-45}"
stage integration make --no-print-directory integration

echo "check: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
