#!/usr/bin/env bash
# make check-qemu10: the integration tests (integration/run) against QEMU 10.0 from
# bookworm-backports (scripts/qemu10.sh unpacks it into QEMU10DIR, default build/qemu10), found
# first on PATH; the system's QEMU stays the default for everything else. Ends with one tally
# line, "check-qemu10: N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 1
dir=${1:-build/qemu10}
log=build/check-qemu10.log
mkdir -p build

tally() {
	echo "check-qemu10: $1 passed, $2 failed, ${3:-0} skipped"
	[ "$2" -eq 0 ] && [ "$1" -gt 0 ]
	exit
}

if ! scripts/qemu10.sh "$dir"; then
	echo "== check-qemu10: no QEMU 10.0 in $dir (scripts/qemu10.sh failed)"
	tally 0 1
fi
bin=$(cd "$dir/bin" && pwd)
PATH=$bin:$PATH
export PATH
# Every helper finds QEMU through PATH: make sure these are the ones found.
for t in qemu-system-x86_64 qemu-storage-daemon qemu-img qemu-io; do
	if [ "$(command -v "$t")" != "$bin/$t" ]; then
		echo "== check-qemu10: $t on PATH is $(command -v "$t"), not $bin/$t"
		tally 0 1
	fi
	echo "== $t: $("$t" --version | head -n 1)"
done

echo "== integration on QEMU 10.0: integration/run"
integration/run 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# integration/run closes with "N passed, N failed, N skipped"
p=$(sed -n 's/^\([0-9]*\) passed, [0-9]* failed\(, [0-9]* skipped\)\{0,1\}$/\1/p' "$log" | tail -n 1)
f=$(sed -n 's/^[0-9]* passed, \([0-9]*\) failed\(, [0-9]* skipped\)\{0,1\}$/\1/p' "$log" | tail -n 1)
s=$(sed -n 's/^[0-9]* passed, [0-9]* failed, \([0-9]*\) skipped$/\1/p' "$log" | tail -n 1)
p=${p:-0}
f=${f:-0}
s=${s:-0}
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
	echo "== check-qemu10: integration/run exited $rc"
	f=1
fi
tally "$p" "$f" "$s"
