# shellcheck shell=bash
# integration/lib-batch.sh: helpers for the batch tests (test-batch*.sh), sourced after lib.sh
# and lib-merge.sh (uses their public functions: it_*, start_qsd, qemu_io_check, exp_*,
# live_write_nbd, live_check_nbd, assert_chain, check_offline, state_of, $T, $LM).
#
# bt_start NAME IDX [DIR0]   a qsd "VM" NAME with two disks (exports exp0, exp1): disk0 one
#                            layer (its file in DIR0, default $T/img), disk1 two layers; every
#                            layer holds its own pattern (bt_pat IDX DISK LAYER) at LAYER MiB;
#                            the expected data is kept as EXP keys NAME.0 / NAME.1 and the
#                            chain (active first) in BT_CHAIN[NAME.D]
# bt_pat IDX DISK LAYER      the pattern byte of that layer (distinct for every VM, disk, layer:
#                            IDX 0..14, LAYER 0..7)
# bt_write NAME D PAT OFF LEN  write through NAME's NBD export of disk D, record it
# bt_check_nbd NAME D        every expected byte of disk D reads back through the export
# bt_assert_chain NAME D     livemerge --json chain expD and QEMU agree with BT_CHAIN[NAME.D]
# bt_vm TARGET VERB ARG...   one plan entry (compact JSON)
# bt_plan FILE HEAD ENTRY... a plan: the JSON object HEAD plus "vms": [ENTRY...]
# bt_batch RC ARGS...        livemerge --json batch ARGS; fail unless it exits RC; stdout
#                            $T/b.out (checked: JSON lines, one summary, last), stderr $T/b.err
# bt_vm_line I               the {"type":"vm"} line of plan entry I (exactly one)
# bt_summary                 the summary as {"vms","ok","failed"}
# bt_max_overlap             the most VMs whose jobs overlapped, from the order of the lines
# bt_assert_parallel N       at most N VMs ran at once (two independent checks, see below)

declare -gA BT_CHAIN=()
BT_SIZE=${BT_SIZE:-32M}
BT_RC=0
BT_CMD=

bt_pat() {
	(($1 <= 14 && $3 < 8)) || it_fail "bt_pat: no pattern for VM $1 layer $3"
	printf '0x%02x\n' $((0x10 + ($1 * 2 + $2) * 8 + $3))
}

# bt__layer FILE KEY PAT OFF: write PAT at OFF (1 MiB) into FILE offline, record it for KEY.
bt__layer() {
	qemu_io_check "$1" "write -P $3 $4 1M"
	exp_add "$2" "$3" "$4" 1M
}

bt_start() {
	local name=$1 idx=$2 dir0=${3:-$T/img} d0 d1a d1b
	d0=$dir0/$name-d0.0.qcow2
	d1a=$T/img/$name-d1.0.qcow2
	d1b=$T/img/$name-d1.1.qcow2
	qemu-img create -q -f qcow2 "$d0" "$BT_SIZE" >&2
	bt__layer "$d0" "$name.0" "$(bt_pat "$idx" 0 0)" 0
	qemu-img create -q -f qcow2 "$d1a" "$BT_SIZE" >&2
	bt__layer "$d1a" "$name.1" "$(bt_pat "$idx" 1 0)" 0
	qemu-img create -q -f qcow2 -b "$d1a" -F qcow2 "$d1b" >&2
	bt__layer "$d1b" "$name.1" "$(bt_pat "$idx" 1 1)" 1M
	BT_CHAIN[$name.0]=$(files_json "$d0")
	BT_CHAIN[$name.1]=$(files_json "$d1b" "$d1a")
	start_qsd "$name" "$d0" "$d1b"
}

# bt_push NAME D FILE: FILE is disk D's new active layer (a snapshot).
bt_push() {
	BT_CHAIN[$1.$2]=$(jq -c --arg f "$3" '[$f] + .' <<<"${BT_CHAIN[$1.$2]}")
}

# bt_pop NAME D: the active layer was committed into the one below.
bt_pop() {
	BT_CHAIN[$1.$2]=$(jq -c '.[1:]' <<<"${BT_CHAIN[$1.$2]}")
}

# bt_top NAME D: disk D's active file.
bt_top() {
	jq -r '.[0]' <<<"${BT_CHAIN[$1.$2]}"
}

bt_write() {
	IT_NBD=$T/$1.nbd live_write_nbd "$1.$2" "disk$2" "$3" "$4" "$5"
}

bt_check_nbd() {
	IT_NBD=$T/$1.nbd live_check_nbd "$1.$2" "disk$2"
}

bt_assert_chain() {
	local -a files
	mapfile -t files < <(jq -r '.[]' <<<"${BT_CHAIN[$1.$2]}")
	LM_SOCK=$T/$1.qmp assert_chain "exp$2" "${files[@]}"
}

# bt_check_offline NAME D: after NAME stopped: every byte of disk D through its active file.
bt_check_offline() {
	check_offline "$1.$2" "$(bt_top "$1" "$2")" "$BT_SIZE"
}

bt_vm() {
	local target=$1 verb=$2 args='[]'
	shift 2
	# (not jq --args: jq 1.6 takes an argument like "--speed" for its own option)
	(($# == 0)) || args=$(printf '%s\n' "$@" | jq -R . | jq -sc .)
	jq -nc --arg t "$target" --arg v "$verb" --argjson a "$args" '{target: $t, verb: $v, args: $a}'
}

bt_plan() {
	local file=$1 head=$2
	shift 2
	printf '%s\n' "$@" | jq -s --argjson head "$head" '$head + {vms: .}' >"$file" ||
		it_fail "bt_plan: cannot build $file"
}

bt_report() {
	echo "[$BT_CMD] exit $BT_RC; stderr: $(head -n 3 "$T/b.err" | tr '\n' ' '); stdout tail: $(tail -n 3 "$T/b.out" | cut -c 1-400 | tr '\n' ' ')"
}

bt_batch() {
	local want=$1 n last
	shift
	BT_RC=0
	BT_CMD="livemerge --json batch $*"
	it_log "\$ $BT_CMD"
	timeout -k 5 "${BT_TIMEOUT:-60}" "$LM" --json batch "$@" >"$T/b.out" 2>"$T/b.err" </dev/null || BT_RC=$?
	[[ ! -s $T/b.err ]] || sed 's/^/    stderr: /' "$T/b.err" >&2
	((BT_RC == want)) || it_fail "expected exit $want: $(bt_report)"
	((want == 2)) && return 0
	jq -e . "$T/b.out" >/dev/null 2>&1 || it_fail "stdout is not JSON lines: $(bt_report)"
	n=$(jq -c 'select(.type == "summary")' "$T/b.out" | grep -c . || true)
	((n == 1)) || it_fail "expected one summary line, got $n: $(bt_report)"
	last=$(tail -n 1 "$T/b.out" | jq -r .type)
	it_assert_eq "$last" summary "the last line of the batch's output"
}

bt_vm_line() {
	local n
	n=$(jq -c --argjson i "$1" 'select(.type == "vm" and .vm == $i)' "$T/b.out" | grep -c . || true)
	((n == 1)) || it_fail "plan entry $1: expected one vm line, got $n: $(bt_report)"
	jq -c --argjson i "$1" 'select(.type == "vm" and .vm == $i)' "$T/b.out"
}

# bt_expect_vm I OUTCOME [TEXT]: entry I's line says outcome OUTCOME (ok iff 0), and its error
# message contains TEXT.
bt_expect_vm() {
	local line got
	line=$(bt_vm_line "$1")
	got=$(jq -c '[.result.outcome, .result.ok]' <<<"$line")
	it_assert_eq "$got" "[$2,$( (($2 == 0)) && echo true || echo false)]" "plan entry $1: [outcome, ok] in its vm line ($line)"
	if [[ -n ${3:-} ]]; then
		jq -r '.result.error.message // ""' <<<"$line" | grep -qF -- "$3" ||
			it_fail "plan entry $1: the error does not say '$3': $line"
	fi
}

bt_summary() {
	jq -c 'select(.type == "summary") | {vms, ok, failed}' "$T/b.out"
}

# bt_max_overlap: walk the lines in the order livemerge wrote them (one stream, so buffering
# cannot reorder them): a VM counts as running from its first job line to its vm line. The
# highest count is a lower bound of how many VMs really ran at once.
bt_max_overlap() {
	jq -s '[foreach .[] as $l ({seen: {}, active: 0, max: 0};
		if $l.type == "job" and (.seen[$l.vm | tostring] | not) then
			.seen[$l.vm | tostring] = true | .active += 1 | .max = ([.max, .active] | max)
		elif $l.type == "vm" and .seen[$l.vm | tostring] then .active -= 1
		else . end; .max)] | max // 0' "$T/b.out"
}

# bt_assert_parallel N EXACT: at most N VMs ran at once, by two independent measures:
#  - the order of the lines (bt_max_overlap) never shows more than N VMs between their first
#    job line and their vm line; with EXACT=1 it shows N (the limit was used, not just obeyed)
#  - time: with at most N running at any moment, the wall time of the whole batch is at least
#    (sum of every VM's own seconds) / N; ignoring the limit would make it about the longest
#    VM's seconds (the summary's seconds: the batch's own clock, the stricter one)
bt_assert_parallel() {
	local n=$1 exact=${2:-0} max sum total
	max=$(bt_max_overlap)
	((max <= n)) || it_fail "--parallel $n: $max VMs had jobs at once: $(bt_report)"
	((exact == 0 || max == n)) || it_fail "--parallel $n: at most $max VMs ran at once (expected $n): $(bt_report)"
	sum=$(jq -s '[.[] | select(.type == "vm") | .seconds] | add' "$T/b.out")
	total=$(jq -s '.[] | select(.type == "summary") | .seconds' "$T/b.out")
	jq -en --argjson s "$sum" --argjson t "$total" --argjson n "$n" '$t + 0.05 >= $s / $n' >/dev/null ||
		it_fail "--parallel $n: the batch took $total s for $sum VM-seconds: more than $n at once: $(bt_report)"
	it_log "--parallel $n: at most $max VMs at once by the line order; $sum VM-seconds in $total s"
}
