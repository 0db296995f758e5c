#!/bin/sh
# Run libFuzzer targets for a while each; fail on any crash.
# usage: scripts/run-fuzz.sh SECONDS FUZZER...
#
# FUZZER is a binary build/fuzz/fuzz-NAME; it runs for SECONDS
# (-max_total_time) with -rss_limit_mb=1024 and a 10 s per-input timeout, on
# a temporary copy of fuzz/corpus/NAME/ (so the tree is not modified; an
# empty corpus if there is none). Per target one line:
#     fuzz NAME: N execs, 0 crashes
# with N from libFuzzer's closing "#N DONE" line. A crash, leak, timeout or
# out-of-memory prints the saved input's path and the end of the log, keeps
# the temporary directory, and makes the script exit non-zero after the
# remaining targets ran. So does any sanitizer report: the targets are built
# with -fno-sanitize-recover=all, halt_on_error=1 is set for ASan and UBSan
# here (after any options of the caller's, so it wins), and a log that holds
# a "runtime error" or "Sanitizer" report fails the target all the same.
set -u
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}halt_on_error=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:print_stacktrace=1"
[ $# -ge 2 ] || { echo "usage: $0 SECONDS FUZZER..." >&2; exit 2; }
secs=$1
shift
case $secs in '' | *[!0-9]*) echo "run-fuzz: SECONDS must be a number, got '$secs'" >&2; exit 2 ;; esac
top=$(cd "$(dirname "$0")/.." && pwd)
status=0
passed=0
failed=0
for fz in "$@"; do
	bin=$(basename "$fz")
	name=${bin#fuzz-}
	if [ ! -x "$fz" ]; then
		echo "fuzz $name: $fz is not an executable" >&2
		status=1
		failed=$((failed + 1))
		continue
	fi
	work=$(mktemp -d "${TMPDIR:-/tmp}/lm-fuzz-$name.XXXXXX")
	mkdir -p "$work/corpus" "$work/artifacts"
	if [ -d "$top/fuzz/corpus/$name" ]; then
		cp -R "$top/fuzz/corpus/$name/." "$work/corpus/"
	fi
	"$fz" -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1
	rc=$?
	execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]]*DONE.*/\1/p' "$work/log" | tail -n 1)
	crashes=$(find "$work/artifacts" -type f | wc -l)
	# a sanitizer report that did not stop the target still fails it
	reports=$(grep -cE 'runtime error|ERROR: [A-Za-z]*Sanitizer|SUMMARY: [A-Za-z]*Sanitizer' "$work/log")
	if [ $rc -eq 0 ] && [ "$crashes" -eq 0 ] && [ "$reports" -eq 0 ] && [ -n "$execs" ]; then
		echo "fuzz $name: $execs execs, 0 crashes"
		rm -rf -- "$work"
		passed=$((passed + 1))
		continue
	fi
	status=1
	failed=$((failed + 1))
	[ "$crashes" -gt 0 ] || [ "$reports" -gt 0 ] || crashes=1
	echo "fuzz $name: ${execs:-?} execs, $crashes crashes, $reports sanitizer report lines (exit status $rc)"
	grep -m 3 -E 'runtime error|ERROR: [A-Za-z]*Sanitizer' "$work/log" | sed "s/^/fuzz $name: /"
	for f in "$work"/artifacts/*; do
		[ -f "$f" ] && echo "fuzz $name: crash input: $f"
	done
	echo "fuzz $name: log $work/log, its end:" >&2
	tail -n 40 "$work/log" >&2
done
# one target, one test, in the tally make check keeps
echo "fuzz: $passed passed, $failed failed"
exit $status
