#!/bin/sh
# contract.buf_lint: the published protos pass `buf lint` (STANDARD +
# COMMENTS, per proto/buf.yaml) with zero findings.
# Usage: buf_lint.sh <repo root>
set -u
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

cd "$root/proto" || exit 1
echo "buf $("$buf" --version): lint $root/proto"
if "$buf" lint; then
  echo "PASS: buf lint clean"
  exit 0
fi
echo "FAIL: buf lint findings above" >&2
exit 1
