# Shared by the contract test scripts: sourced, not run.
# shellcheck shell=sh
# Sets $buf to the pinned buf binary of tests/package.json, or exits 1.

root=${1:?usage: $0 <repo root>}
root=$(cd "$root" && pwd) || exit 1
buf=$root/tests/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
  echo "FAIL: buf not found at $buf" >&2
  echo "      install the pinned tooling: (cd $root/tests && npm ci)" >&2
  exit 1
fi
# buf caches modules and clones; keep that out of the source tree.
: "${BUF_CACHE_DIR:=${TMPDIR:-/tmp}/rtc-buf-cache}"
export BUF_CACHE_DIR
mkdir -p "$BUF_CACHE_DIR"
