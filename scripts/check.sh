#!/usr/bin/env bash
# make check: unit tests, the same under ASan+UBSan, bounded fuzzing, and the
# integration tests against real QEMU; ends with one tally line.
set -u
cd "$(dirname "$0")/.."
mkdir -p build
pass=0
fail=0

# stage NAME COMMAND...: run it, show its output, add its counts to the tally
stage() {
	local name=$1 log=build/check-$1.log rc p f
	shift
	echo "== $name: $*"
	"$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	# cmocka: "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)"; ours: "N passed, N failed"
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p; s/^\([a-z]*: \)\{0,1\}\([0-9]*\) passed, [0-9]* failed.*/\2/p' "$log" |
		awk '{s+=$1} END {print s+0}')
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p; s/^\([a-z]*: \)\{0,1\}[0-9]* passed, \([0-9]*\) failed.*/\2/p' "$log" |
		awk '{s+=$1} END {print s+0}')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		echo "== $name: exited $rc"
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	echo "== $name: $p passed, $f failed"
}

stage unit make --no-print-directory unit
stage asan make --no-print-directory asan
stage fuzz make --no-print-directory fuzz-check FUZZ_SECONDS="${FUZZ_SECONDS:-45}"
stage integration make --no-print-directory integration

echo "check: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
