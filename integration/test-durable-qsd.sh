#!/usr/bin/env bash
# test-durable-qsd: test-durable's matrix on qemu-storage-daemon (disks exp0, exp1: named by
# their NBD exports; nothing writes, so nothing flushes for the merge): each merge livemerge
# reported done survives a SIGKILL of the daemon the moment after: the headers name the new
# chain, every layer's data reads back through the new top, qemu-img check is clean.
# Every case runs; the verdict names each one that failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-merge.sh
. "$IT_DIR/lib-merge.sh"
# shellcheck source-path=SCRIPTDIR source=lib-durable.sh
. "$IT_DIR/lib-durable.sh"
lm_setup

dur_matrix qsd
dur_verdict
