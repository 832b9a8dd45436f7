#!/usr/bin/env bash
# Runs every libFuzzer target built in <build-fuzz-dir>/bin (fuzz_*) over its
# seed corpus for [seconds] each (default 20). The corpus of fuzz_<x> is
# tests/fuzz/corpus/fuzz_<x>/ or tests/fuzz/corpus/<x>/.
# The corpus is copied to a temporary directory, so the tree is never
# modified; a crash, leak, UB report or timeout fails the run, and the input
# that caused it is kept in <build-fuzz-dir>/fuzz-artifacts/<name>/.
#
#   tests/fuzz/run.sh build-fuzz [seconds]
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
	[[ $# -ge 1 && ($1 == -h || $1 == --help) ]] && exit 0
	exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$(cd "$1" && pwd)"
SECS="${2:-20}"
if ! [[ $SECS =~ ^[0-9]+$ ]] || ((SECS < 1)); then
	echo "run.sh: seconds must be a positive integer, got '$SECS'" >&2
	exit 2
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# UBSan in the fuzz build recovers by default; make every report fatal so
# libFuzzer counts it as a crash.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"

shopt -s nullglob
targets=("$BUILD"/bin/fuzz_*)
if ((${#targets[@]} == 0)); then
	echo "fuzz: no targets in $BUILD/bin (nothing to run)"
	exit 0
fi

failed=()
for bin in "${targets[@]}"; do
	[[ -x $bin && -f $bin ]] || continue
	name="$(basename "$bin")"
	corpus="$TMP/$name"
	mkdir -p "$corpus"
	seed_dir=""
	for d in "$HERE/corpus/$name" "$HERE/corpus/${name#fuzz_}"; do
		if [[ -d $d ]]; then
			seed_dir="$d"
			break
		fi
	done
	if [[ -n $seed_dir ]]; then
		cp -R "$seed_dir/." "$corpus/"
	else
		echo "fuzz: warning: no seed corpus at tests/fuzz/corpus/{$name,${name#fuzz_}}/" >&2
	fi
	seeds="$(find "$corpus" -type f | wc -l)"
	artifacts="$BUILD/fuzz-artifacts/$name"
	mkdir -p "$artifacts"
	args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048
		-print_final_stats=1 -artifact_prefix="$artifacts/")
	for d in "$HERE/$name.dict" "$HERE/${name#fuzz_}.dict"; do
		if [[ -f $d ]]; then
			args+=(-dict="$d")
			break
		fi
	done
	log="$TMP/$name.log"
	echo "fuzz: $name: ${SECS}s over $seeds seed(s)"
	rc=0
	# libFuzzer stops itself after -max_total_time; the outer timeout only
	# catches a target that never returns.
	timeout -k 10 "$((SECS + 120))" "$bin" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?
	if ((rc != 0)); then
		tail -n 60 "$log" >&2
		echo "fuzz: $name: FAILED (exit $rc); artifacts in $artifacts" >&2
		failed+=("$name")
	else
		runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
		echo "fuzz: $name: ok (${runs:-?} executions)"
	fi
done

if ((${#failed[@]} > 0)); then
	echo "fuzz: failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: all targets ok"
