#!/usr/bin/env bash
# test-chain: `livemerge chain` shows each disk's live backing chain, as QEMU has it open.
#
# Three layouts (-blockdev VM, -drive VM, qemu-storage-daemon), each with two disks whose
# chains have depth 1 and 3. For each: `--json chain` gives one object a line per disk whose
# layers match `qemu-img info --backing-chain -U` (filename, format, virtual-size,
# backing-filename, layer count); the disk's names match the layout; every node name is
# non-empty, unique, and is the QEMU node of that file and format (query-named-block-nodes);
# each naming form selects the same disk; the plain output has one line per layer; an
# unknown disk exits 2, a missing socket 3; after the process stops, the data is intact.
# `--version -c` names the QEMU behind the target as its query-version does.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
it_setup
it_require_lm

# The layer fields compared with qemu-img; backing-filename is absent on the base.
LAYER='{filename, format, "virtual-size"} + (if has("backing-filename") then {"backing-filename": ."backing-filename"} else {} end)'

# lm ARGS...: run livemerge (30 s at most): stdout in $T/lm.out, stderr in $T/lm.err,
# exit status in LM_RC.
lm() {
	LM_RC=0
	timeout 30 "$LM" "$@" >"$T/lm.out" 2>"$T/lm.err" </dev/null || LM_RC=$?
}

# lm_ok ARGS...: as lm; fail unless livemerge exits 0.
lm_ok() {
	lm "$@"
	((LM_RC == 0)) || it_fail "livemerge $*: exit $LM_RC: $(head -n 1 "$T/lm.err")"
}

# json_lines WHAT COUNT: $T/lm.out is COUNT lines, each exactly one JSON object; print them
# compact with sorted keys.
json_lines() {
	local what=$1 count=$2 line
	it_assert_eq "$(wc -l <"$T/lm.out")" "$count" "$what: lines of output"
	while IFS= read -r line; do
		jq -cnS --argjson o "$line" 'if $o | type == "object" then $o else error("not an object") end' ||
			it_fail "$what: not one JSON object: $line"
	done <"$T/lm.out"
}

# check_disk LAYOUT OBJ TOPFILE DISK DEVICE QDEV [NODE]: OBJ is the disk TOPFILE with the
# expected names (QDEV "": no qdev key; NODE "": any non-empty name) and the chain qemu-img
# reads from the files.
check_disk() {
	local layout=$1 obj=$2 top=$3 disk=$4 device=$5 qdev=$6 node=${7:-} ref what
	what="$layout $disk"
	it_assert_eq "$(jq -r .disk <<<"$obj")" "$disk" "$what: disk"
	it_assert_eq "$(jq -r '.device // ""' <<<"$obj")" "$device" "$what: device"
	if [[ -n $qdev ]]; then
		it_assert_eq "$(jq -r .qdev <<<"$obj")" "$qdev" "$what: qdev"
	else
		it_assert_eq "$(jq -c 'has("qdev")' <<<"$obj")" false "$what: qdev present on a disk without device"
	fi
	it_assert_eq "$(jq -r '."node-name" == .chain[0]."node-name"' <<<"$obj")" true \
		"$what: node-name is not the first layer's: $obj"
	[[ -z $node ]] || it_assert_eq "$(jq -r '."node-name"' <<<"$obj")" "$node" "$what: node-name"
	ref=$(qemu-img info --backing-chain --output=json -U "$top" | jq -c "[.[] | $LAYER]")
	it_assert_eq "$(jq -c '[.[].filename]' <<<"$ref")" "$(chain_files "$top" | jq -R . | jq -sc .)" \
		"$what: qemu-img's own view of the chain"
	it_assert_eq "$(jq -c '.chain | length' <<<"$obj")" "$(jq length <<<"$ref")" "$what: layer count"
	it_assert_eq "$(jq -c "[.chain[] | $LAYER]" <<<"$obj")" "$ref" "$what: layers against qemu-img info"
}

# check_nodes LAYOUT ALL: ALL is every disk's object (one a line). Every layer's node name is
# non-empty and unique, and QEMU has a node of that name, format and file.
check_nodes() {
	local layout=$1 all=$2 names nodes got want
	names=$(jq -c '.chain[]."node-name"' <<<"$all" | jq -sc .)
	it_assert_eq "$(jq -c 'map(select(type != "string" or . == "")) | length' <<<"$names")" 0 \
		"$layout: empty or missing node names in $names"
	it_assert_eq "$(jq -c 'unique | length' <<<"$names")" "$(jq -c length <<<"$names")" \
		"$layout: node names not unique: $names"
	nodes=$(qmp_raw "$T/$layout.qmp" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}')
	want=$(jq -c '.chain[] | {node: ."node-name", file: .filename, format}' <<<"$all" | jq -sc 'sort')
	got=$(jq -c --argjson names "$names" \
		'[.return[] | select(."node-name" as $n | $names | index($n)) | {node: ."node-name", file, format: .drv}] | sort' \
		<<<"$nodes")
	it_assert_eq "$got" "$want" "$layout: QEMU's nodes of the reported node names"
}

# check_plain LAYOUT SEL OBJ: plain `chain SEL` has one line per layer of OBJ, active layer
# first, each with the layer's file name and node name.
check_plain() {
	local layout=$1 sel=$2 obj=$3 files lines line k=0 file node nlines nfiles
	lm_ok -c "unix:$T/$layout.qmp" chain "$sel"
	files=$(jq -r '.chain[].filename' <<<"$obj")
	lines=$(grep -F -f <(echo "$files") "$T/lm.out" || true)
	nlines=$(grep -c . <<<"$lines" || true)
	nfiles=$(grep -c . <<<"$files")
	if ((nlines != nfiles)); then
		cat "$T/lm.out" >&2
		it_fail "$layout: plain 'chain $sel': $nlines lines name a layer file, want one per layer ($nfiles)"
	fi
	while IFS= read -r file; do
		k=$((k + 1))
		node=$(jq -r --argjson k "$((k - 1))" '.chain[$k]."node-name"' <<<"$obj")
		line=$(sed -n "${k}p" <<<"$lines")
		[[ $line == *"$file"* && $line == *"$node"* ]] ||
			it_fail "$layout: plain 'chain $sel': line $k of the layers lacks $file or $node: $line"
	done <<<"$files"
}

# check_layout LAYOUT TOPS DISKS DEVICES QDEVS NODES SELECTORS: the process $T/LAYOUT.qmp
# serves two disks; each argument after LAYOUT is a "|"-separated list, one entry per disk
# (SELECTORS: entries separated by spaces; "@node" stands for the disk's reported node name).
check_layout() {
	local layout=$1 sock="unix:$T/$1.qmp" all obj sel i one
	local -a tops disks devices qdevs nodes sels objs
	IFS='|' read -r -a tops <<<"$2"
	IFS='|' read -r -a disks <<<"$3"
	IFS='|' read -r -a devices <<<"$4"
	IFS='|' read -r -a qdevs <<<"$5"
	IFS='|' read -r -a nodes <<<"$6"
	IFS='|' read -r -a sels <<<"$7"

	lm_ok -c "$sock" --json chain
	all=$(json_lines "$layout: --json chain" 2)
	for i in 0 1; do
		objs[i]=$(jq -c --arg f "${tops[i]}" 'select(.chain[0].filename == $f)' <<<"$all")
		[[ -n ${objs[i]} ]] || it_fail "$layout: no disk with active layer ${tops[i]} in: $all"
		check_disk "$layout" "${objs[i]}" "${tops[i]}" "${disks[i]}" "${devices[i]:-}" "${qdevs[i]:-}" "${nodes[i]:-}"
	done
	check_nodes "$layout" "$all"

	for i in 0 1; do
		for sel in ${sels[i]}; do
			[[ $sel == @node ]] && sel=$(jq -r '."node-name"' <<<"${objs[i]}")
			lm_ok -c "$sock" --json chain "$sel"
			one=$(json_lines "$layout: --json chain $sel" 1)
			it_assert_eq "$one" "${objs[i]}" "$layout: --json chain $sel"
		done
	done
	lm_ok -c "$sock" --json chain "${disks[1]}" "${disks[0]}"
	it_assert_eq "$(json_lines "$layout: --json chain ${disks[1]} ${disks[0]}" 2 | sort)" "$(sort <<<"$all")" \
		"$layout: --json chain of both disks by name"

	for i in 0 1; do
		check_plain "$layout" "${disks[i]}" "${objs[i]}"
	done
	lm_ok -c "$sock" chain
	it_assert_eq "$(grep -cF -f <(jq -r '.chain[].filename' <<<"$all") "$T/lm.out" || true)" 6 \
		"$layout: plain 'chain' (all disks): lines naming a layer file"

	lm -c "$sock" chain no-such-disk
	it_assert_eq "$LM_RC" 2 "$layout: exit status of 'chain no-such-disk'"
	it_assert_eq "$(wc -l <"$T/lm.err")" 1 "$layout: lines on stderr for 'chain no-such-disk'"
	grep -q no-such-disk "$T/lm.err" || it_fail "$layout: error does not name the disk: $(cat "$T/lm.err")"
	[[ ! -s $T/lm.out ]] || it_fail "$layout: output for an unknown disk: $(cat "$T/lm.out")"
	lm -c "$sock" --json chain "${disks[0]}" no-such-disk
	it_assert_eq "$LM_RC" 2 "$layout: exit status of 'chain ${disks[0]} no-such-disk'"
}

mkdir "$T/img"

lm -c "unix:$T/missing.qmp" chain
it_assert_eq "$LM_RC" 3 "exit status with a missing socket"
[[ -s $T/lm.err ]] || it_fail "no error message with a missing socket"
lm -c "unix:$T/missing.qmp" --json chain vda
it_assert_eq "$LM_RC" 3 "exit status of --json chain vda with a missing socket"

# ---- -blockdev VM: anonymous block backends, named nodes vdX-top.
a=$(mk_chain "$T/img" bda 1 64M)
b=$(mk_chain "$T/img" bdb 3 64M)
start_vm_blockdev bd "$a" "$b"
lm_ok --version -c "unix:$T/bd.qmp"
qv=$(qmp_raw "$T/bd.qmp" '{"execute":"query-version"}' | jq -r '.return.qemu | "\(.major).\(.minor).\(.micro)"')
it_assert_eq "$(cat "$T/lm.out")" "$("$LM" --version)"$'\n'"qemu $qv (unix:$T/bd.qmp)" "--version -c"
check_layout bd "$a|$b" "vda|vdb" "|" \
	"/machine/peripheral/vda/virtio-backend|/machine/peripheral/vdb/virtio-backend" "vda-top|vdb-top" \
	"vda /machine/peripheral/vda/virtio-backend vda-top|vdb /machine/peripheral/vdb/virtio-backend vdb-top"
stop_vm bd
verify_chain_data "$a" bda 1
verify_chain_data "$b" bdb 3

# ---- -drive VM: named block backends, node names chosen by QEMU.
a=$(mk_chain "$T/img" dra 1 64M)
b=$(mk_chain "$T/img" drb 3 64M)
start_vm_drive dr "$a" "$b"
blocks=$(qmp_raw "$T/dr.qmp" '{"execute":"query-block"}')
drive_nodes=$(jq -r '[.return[] | .inserted."node-name"] | join("|")' <<<"$blocks")
[[ $(jq -r '[.return[] | .device] | join("|")' <<<"$blocks") == "drive-virtio-disk0|drive-virtio-disk1" ]] ||
	it_fail "dr: query-block devices out of order: $blocks"
check_layout dr "$a|$b" "virtio-disk0|virtio-disk1" "drive-virtio-disk0|drive-virtio-disk1" \
	"/machine/peripheral/virtio-disk0/virtio-backend|/machine/peripheral/virtio-disk1/virtio-backend" "$drive_nodes" \
	"virtio-disk0 /machine/peripheral/virtio-disk0/virtio-backend drive-virtio-disk0 @node|virtio-disk1 /machine/peripheral/virtio-disk1/virtio-backend drive-virtio-disk1 @node"
stop_vm dr
verify_chain_data "$a" dra 1
verify_chain_data "$b" drb 3

# ---- qemu-storage-daemon: no devices; the disks are named after their NBD exports
# exp0, exp1 (stable across snapshots), and found by their top nodes disk0, disk1 too.
a=$(mk_chain "$T/img" qsa 1 64M)
b=$(mk_chain "$T/img" qsb 3 64M)
start_qsd qs "$a" "$b"
check_layout qs "$a|$b" "exp0|exp1" "|" "|" "disk0|disk1" "exp0 disk0|exp1 disk1"
stop_vm qs
verify_chain_data "$a" qsa 1
verify_chain_data "$b" qsb 3

# ---- jobs running: a job puts a filter node on the chain it works on (mirror_top above an
# active commit's top, commit_top above an intermediate commit's top, copy-on-read above a
# stream's top). Each disk is listed once, with its layers only and the filter marked above
# the layer it sits on; a verb on a disk with a job on it is refused before anything is sent.
a=$(mk_chain "$T/img" jba 1 64M)
b=$(mk_chain "$T/img" jbb 3 64M)
c=$(mk_chain "$T/img" jbc 2 64M)
qemu_io_check "$a" "write -P 0x77 8M 16M"
start_vm_blockdev jb "$a" "$b" "$c"
b2=$(sed -n 2p <<<"$(chain_files "$b")")
b1=$(sed -n 3p <<<"$(chain_files "$b")")
qmp_raw "$T/jb.qmp" \
	'{"execute":"block-commit","arguments":{"job-id":"ja","device":"vda-top","speed":1}}' \
	"$(jq -nc --arg t "$b2" --arg b "$b1" '{execute: "block-commit", arguments: {"job-id": "jb", device: "vdb-top", top: $t, base: $b, speed: 1}}')" \
	'{"execute":"block-stream","arguments":{"job-id":"jc","device":"vdc-top","speed":1}}' >/dev/null ||
	it_fail "jb: a job was refused"
lm_ok -c "unix:$T/jb.qmp" --json chain
json_lines "jobs running" 3
it_assert_eq "$(jq -r .disk "$T/lm.out" | paste -sd' ')" "vda vdb vdc" "jobs running: disks"
i=0
for top in "$a" "$b" "$c"; do
	obj=$(sed -n "$((i + 1))p" "$T/lm.out")
	it_assert_eq "$(jq -r '[.chain[].filename] | join(" ")' <<<"$obj")" "$(chain_files "$top" | paste -sd' ')" \
		"jobs running: layers of disk $i"
	i=$((i + 1))
done
filters=$(jq -r '.filters[] | "\(.driver) \(.above)"' "$T/lm.out" | paste -sd'|')
it_assert_eq "$filters" "mirror_top vda-top|commit_top $(jq -r 'select(.disk == "vdb") | .chain[1]."node-name"' "$T/lm.out")|copy-on-read vdc-top" \
	"jobs running: filters"
lm_ok -c "unix:$T/jb.qmp" chain
it_assert_eq "$(grep -c '^  filter ' "$T/lm.out")" 3 "jobs running: filter lines"
it_assert_eq "$(grep -c '^vd[abc] ' "$T/lm.out")" 3 "jobs running: disk lines"
for verb in "commit vda" "stream vdc" "snapshot vdb=$T/img/jb-new.qcow2"; do
	# shellcheck disable=SC2086
	lm -c "unix:$T/jb.qmp" $verb
	it_assert_eq "$LM_RC" 2 "jobs running: $verb"
	grep -q 'a block job runs on it' "$T/lm.err" || it_fail "jobs running: $verb: $(head -n 1 "$T/lm.err")"
done
[[ ! -e $T/img/jb-new.qcow2 ]] || it_fail "jobs running: a refused snapshot made its overlay"
it_assert_eq "$(qmp_raw "$T/jb.qmp" '{"execute":"query-jobs"}' | jq -r '[.return[] | .id] | sort | join(" ")')" \
	"ja jb jc" "jobs running: the jobs after the refusals"
qmp_raw "$T/jb.qmp" '{"execute":"job-cancel","arguments":{"id":"ja"}}' \
	'{"execute":"job-cancel","arguments":{"id":"jb"}}' '{"execute":"job-cancel","arguments":{"id":"jc"}}' >/dev/null
stop_vm jb
verify_chain_data "$b" jbb 3
verify_chain_data "$c" jbc 2
qemu_io_check -r "$a" "read -P $(chain_pattern 0) 0 1M" "read -P $(chain_pattern 1) 1M 1M" "read -P 0x77 8M 16M"

it_pass
