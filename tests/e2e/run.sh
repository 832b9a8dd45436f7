#!/usr/bin/env bash
# Runs one e2e suite (tests/e2e/<suite>.mjs) inside a fresh network
# namespace that has only loopback, so no WebRTC candidate ever leaves the
# machine: the stack (Redis, coturn, rtc-auth, two rtc-signaling pods, the
# bridges, a static file server) and headless chromium all start inside it.
#
#   tests/e2e/run.sh <bin dir> <repo root> <artifacts dir> <suite> [node test args…]
#
# RTC_E2E_ARTIFACTS, when set, overrides <artifacts dir>. A missing tool
# fails (exit 1) with the command that installs it; nothing is skipped.
set -euo pipefail

if (($# < 4)); then
	echo "usage: $0 <bin dir> <repo root> <artifacts dir> <suite> [args…]" >&2
	exit 2
fi
BIN="$(cd "$1" && pwd)"
ROOT="$(cd "$2" && pwd)"
ARTIFACTS="${RTC_E2E_ARTIFACTS:-$3}"
SUITE="$4"
shift 4

SCRIPT="$ROOT/tests/e2e/$SUITE.mjs"
if [[ ! -f $SCRIPT ]]; then
	echo "e2e: no suite $SCRIPT" >&2
	exit 2
fi

missing=0
need() { # need <command or path> <fix>
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "e2e: FAIL: $1 not found — fix: $2" >&2
		missing=1
	fi
}
need /usr/bin/chromium "apt-get install -y chromium   (or scripts/deps.sh)"
need turnserver "apt-get install -y coturn   (or scripts/deps.sh)"
need redis-server "apt-get install -y redis-server   (or scripts/deps.sh)"
need node "apt-get install -y nodejs npm   (or scripts/deps.sh)"
need unshare "apt-get install -y util-linux"
need ip "apt-get install -y iproute2"
need setpriv "apt-get install -y util-linux"
if [[ ! -f $ROOT/tests/node_modules/playwright-core/package.json ]]; then
	echo "e2e: FAIL: tests/node_modules/playwright-core is missing — fix: (cd $ROOT/tests && npm ci)   (or scripts/deps.sh)" >&2
	missing=1
fi
for b in rtc-auth rtc-signaling rtc-bridge; do
	if [[ ! -x $BIN/$b ]]; then
		echo "e2e: FAIL: $BIN/$b is missing — fix: cmake --build <build dir> --target $b" >&2
		missing=1
	fi
done
if ((missing)); then
	exit 1
fi

mkdir -p "$ARTIFACTS"
ARTIFACTS="$(cd "$ARTIFACTS" && pwd)"
export RTC_E2E_BIN="$BIN" RTC_E2E_ROOT="$ROOT" RTC_E2E_ARTIFACTS="$ARTIFACTS"

# Root can unshare the network directly; anyone else gets a user namespace
# mapped to root for it (-r).
UNSHARE=(unshare -n)
if [[ $(id -u) != 0 ]]; then
	UNSHARE=(unshare -r -n)
fi

echo "e2e: suite $SUITE in a fresh network namespace (loopback only); artifacts in $ARTIFACTS"
# The inner shell brings lo up and execs node, so signals from ctest reach
# node directly; node kills every process group it started on exit.
exec "${UNSHARE[@]}" -- bash -c 'set -e; ip link set lo up; exec node --test-reporter=spec "$@"' \
	e2e-netns "$SCRIPT" "$@"
