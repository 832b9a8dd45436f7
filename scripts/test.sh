#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/deps.sh), configures
# with warnings as errors (`cmake --preset ci`), builds, runs all ctest labels
# (unit, interop, contract, ...), then builds the libFuzzer targets (`fuzz`
# preset, clang) and smoke-runs each over its seed corpus. Exits non-zero on
# any failure; the last line printed is ctest's summary.
#
#   scripts/test.sh                 everything (what .ci/run calls)
#   scripts/test.sh --fast          unit tests only, no fuzzing
#   scripts/test.sh --no-fuzz       all ctest labels, no fuzzing
#   scripts/test.sh --asan          ASan+UBSan build (asan preset, build-asan/)
#   scripts/test.sh --fuzz-seconds N   seconds per fuzz target (default 20)
#   scripts/test.sh -- ARGS...      extra arguments for ctest (e.g. -R interop)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FAST=0
FUZZ=1
PRESET=ci
FUZZ_SECS=20
CTEST_EXTRA=()

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

while (($# > 0)); do
	case "$1" in
	--fast)
		FAST=1
		FUZZ=0
		;;
	--no-fuzz) FUZZ=0 ;;
	--asan) PRESET=asan ;;
	--fuzz-seconds)
		[[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || {
			echo "test.sh: --fuzz-seconds needs a number" >&2
			exit 2
		}
		FUZZ_SECS="$2"
		shift
		;;
	--)
		shift
		CTEST_EXTRA=("$@")
		break
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "test.sh: unknown argument: $1" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done

case "$PRESET" in
ci) BUILD_DIR="$ROOT/build" ;;
asan) BUILD_DIR="$ROOT/build-asan" ;;
esac
JOBS="$(nproc 2>/dev/null || echo 2)"

step() { printf '\n==> %s\n' "$*"; }

fail() {
	echo "test.sh: $* FAILED" >&2
	exit 1
}

step "dependencies"
if [[ $FAST == 1 ]]; then
	scripts/deps.sh --build-only || fail "installing dependencies (scripts/deps.sh)"
else
	scripts/deps.sh || fail "installing dependencies (scripts/deps.sh)"
fi

step "configure (cmake --preset $PRESET)"
cmake --preset "$PRESET" || fail "configure"

step "build ($BUILD_DIR, -j$JOBS)"
cmake --build "$BUILD_DIR" -j"$JOBS" || fail "build"

ctest_args=(--test-dir "$BUILD_DIR" --output-on-failure --no-tests=error)
[[ $FAST == 1 ]] && ctest_args+=(-L unit)
ctest_args+=("${CTEST_EXTRA[@]}")

step "ctest ${ctest_args[*]}"
ctest_log="$(mktemp)"
trap 'rm -f "$ctest_log"' EXIT
ctest_rc=0
ctest "${ctest_args[@]}" 2>&1 | tee "$ctest_log" || ctest_rc=$?
summary="$(grep -E '^[0-9]+% tests passed' "$ctest_log" | tail -n 1 || true)"
[[ -n $summary ]] || summary="ctest printed no summary (exit $ctest_rc)"

fuzz_rc=0
if [[ $FUZZ == 1 && $ctest_rc == 0 ]]; then
	step "fuzz targets (cmake --preset fuzz, build-fuzz/)"
	if cmake --preset fuzz && cmake --build "$ROOT/build-fuzz" --target fuzz -j"$JOBS"; then
		step "fuzz smoke run (${FUZZ_SECS}s per target)"
		tests/fuzz/run.sh "$ROOT/build-fuzz" "$FUZZ_SECS" || fuzz_rc=$?
	else
		fuzz_rc=1
	fi
fi

echo
if [[ $ctest_rc != 0 ]]; then
	echo "test.sh: ctest FAILED (exit $ctest_rc)" >&2
elif [[ $fuzz_rc != 0 ]]; then
	echo "test.sh: fuzz smoke run FAILED" >&2
elif [[ $FUZZ == 0 ]]; then
	echo "test.sh: fuzz smoke run skipped"
else
	echo "test.sh: fuzz smoke run ok"
fi
# ctest's summary last, so it is the run's closing line.
echo "$summary"
[[ $ctest_rc == 0 && $fuzz_rc == 0 ]]
