#!/usr/bin/env bash
# test-durable: a merge livemerge reported done survives a QEMU SIGKILL the moment after, on
# a paused -blockdev VM (nothing else flushes for it: no guest runs). For stream (flatten and
# --base), intermediate commit, active commit, a 2-disk commit and a 2-disk stream, each
# without and with --delete, on a chain of three layers with a pattern each: livemerge exits
# 0, QEMU is killed at once, and offline the headers name the new chain, every layer's data
# reads back through the new top, and qemu-img check is clean (lib-durable.sh has the matrix).
# Every case runs; the verdict names each one that failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-durable.sh
. "$IT_DIR/lib-durable.sh"
lm_setup

dur_matrix vm
dur_verdict
