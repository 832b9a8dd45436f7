#!/usr/bin/env bash
# Installs everything rtc's build and tests need on Debian 12, idempotently.
#
#   scripts/deps.sh               build + test tools (apt) and tests/node_modules (npm ci)
#   scripts/deps.sh --build-only  only what building and running the services needs
#   scripts/deps.sh --quiet       no apt/npm chatter unless something fails
#
# Re-runs are fast: apt is skipped entirely when every package is already
# installed, and `npm ci` is skipped while tests/node_modules matches
# tests/package-lock.json (a stamp holds the lockfile's hash).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_ONLY=0
QUIET=0

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

for arg in "$@"; do
	case "$arg" in
	--build-only) BUILD_ONLY=1 ;;
	--quiet) QUIET=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "deps.sh: unknown argument: $arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

say() { [[ $QUIET == 1 ]] || echo "deps: $*"; }

# Runs a command; with --quiet its output goes to a log that is shown only
# when the command fails.
run() {
	if [[ $QUIET == 1 ]]; then
		local log
		log="$(mktemp)"
		if ! "$@" >"$log" 2>&1; then
			cat "$log" >&2
			rm -f "$log"
			echo "deps: failed: $*" >&2
			return 1
		fi
		rm -f "$log"
	else
		"$@"
	fi
}

# What building needs, plus what scripts/up.sh uses to health-check the
# services it starts (curl for /readyz, grpcio for grpc.health.v1).
BUILD_PKGS=(
	build-essential cmake pkg-config
	libuv1-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
	protobuf-compiler libprotobuf-dev libjansson-dev libyajl-dev libcmocka-dev
	libssl-dev libhiredis-dev libjwt-dev uthash-dev libwebsockets-dev libwebsockets-evlib-uv libjemalloc-dev
	curl ca-certificates openssl python3 python3-grpcio redis-server
)
# What the tests, fuzz smoke runs and benchmarks need on top.
TEST_PKGS=(
	clang clang-14 libclang-rt-14-dev
	nghttp2-client nghttp2-server
	libwslay-dev
	python3-protobuf python3-h2 python3-websockets
	prometheus redis-sentinel coturn python3-jwt python3-cryptography chromium
	iproute2 util-linux
	yamllint python3-yaml shellcheck nginx
)

want=("${BUILD_PKGS[@]}")
if [[ $BUILD_ONLY == 0 ]]; then
	want+=("${TEST_PKGS[@]}")
	# Node may come from elsewhere (NodeSource, nvm): only fall back to
	# Debian's when there is none at all.
	# deploy/check.sh needs a kubectl; one from elsewhere (e.g. Google
	# Cloud's package, which conflicts with Debian's) serves as well.
	if ! command -v kubectl >/dev/null 2>&1; then
		want+=(kubernetes-client)
	fi
	if ! command -v node >/dev/null 2>&1; then
		want+=(nodejs npm)
	elif ! command -v npm >/dev/null 2>&1; then
		echo "deps: node is installed but npm is not; install npm for that node" >&2
		exit 1
	fi
fi

# One dpkg-query for every package: names it knows and has installed print
# "<name> ii"; unknown names print nothing (and an error we drop).
missing=()
installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${want[@]}" 2>/dev/null || true)"
for p in "${want[@]}"; do
	if ! grep -qE "^${p} ii" <<<"$installed"; then
		missing+=("$p")
	fi
done

# RUNLEVEL=1: packages with a daemon (nginx, coturn, redis) are installed
# without starting it; tests and deploy/local start their own instances.
apt_install() {
	RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"$@"
}

if ((${#missing[@]} > 0)); then
	if [[ $(id -u) != 0 ]]; then
		echo "deps: missing packages: ${missing[*]}" >&2
		echo "deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
		exit 1
	fi
	say "installing: ${missing[*]}"
	# Keep package scripts from starting daemons (redis-server on 6379,
	# prometheus on 9090): tests start their own on ports they choose.
	policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	# apt-get update only when the package lists are absent or over a day
	# old, or when an install from the current lists fails.
	lists=(/var/lib/apt/lists/*_Packages*)
	if [[ ! -e ${lists[0]} ]] || [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin +1440 -print -quit) ]]; then
		run apt-get update
		run apt_install "${missing[@]}"
	elif ! run apt_install "${missing[@]}"; then
		say "retrying after apt-get update"
		run apt-get update
		run apt_install "${missing[@]}"
	fi
else
	say "apt packages: all present"
fi

if [[ $BUILD_ONLY == 1 ]]; then
	exit 0
fi

# tests/node_modules from the lockfile (buf, grpc-js).
tests="$ROOT/tests"
stamp="$tests/node_modules/.rtc-deps-stamp"
lock_hash="$(sha256sum "$tests/package-lock.json" | cut -d' ' -f1)"
if [[ -f $stamp && $(cat "$stamp") == "$lock_hash" && -x $tests/node_modules/.bin/buf ]]; then
	say "tests/node_modules: up to date"
else
	say "npm ci in tests/"
	(cd "$tests" && run npm ci --no-audit --no-fund)
	echo "$lock_hash" >"$stamp"
fi
