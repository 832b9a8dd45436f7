#!/bin/sh
# contract.buf_breaking: the working tree's proto/ makes no breaking change
# (buf FILE rules, per proto/buf.yaml) against the last published contracts.
#
# Usage: buf_breaking.sh <repo root>
#
# "Published" is the tip of main. Which commit that is, first match wins:
#   $RTC_BUF_AGAINST       any git revision (e.g. a release tag)
#   main                   the local branch (a dev tree; a CI clone of main)
#   origin/main            the remote-tracking branch (CI checkout of a PR)
#   HEAD                   last resort (detached shallow checkout)
# On main with uncommitted edits this compares the edits against HEAD; on a
# feature branch it compares everything not yet merged.
#
# The against tree is exported with `git archive`, so shallow clones and
# worktrees work. If that commit has no proto/ yet (the contracts were never
# published), there is nothing to break: the test says so and passes. Exit 77
# (ctest: skipped) only when <repo root> is not a git checkout at all.
set -u
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

if ! git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  echo "SKIP: $root is not a git checkout; nothing to compare against"
  exit 77
fi

resolve() { git -C "$root" rev-parse --verify --quiet "$1^{commit}"; }
sha=
if [ -n "${RTC_BUF_AGAINST:-}" ]; then
  against=$RTC_BUF_AGAINST
  if ! sha=$(resolve "$against"); then
    echo "FAIL: RTC_BUF_AGAINST=$against is not a commit" >&2
    exit 1
  fi
else
  for against in refs/heads/main refs/remotes/origin/main HEAD; do
    sha=$(resolve "$against") && break
  done
  if [ -z "$sha" ]; then
    echo "PASS: no commit yet, so no published proto/ to compare against"
    exit 0
  fi
fi
short=$(git -C "$root" rev-parse --short "$sha")

if ! git -C "$root" cat-file -e "$sha:proto" 2>/dev/null; then
  echo "PASS: $against ($short) has no proto/ yet: nothing published to break"
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rtc-buf-against.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
if ! git -C "$root" archive "$sha" proto | tar -x -C "$tmp"; then
  echo "FAIL: could not export proto/ from $against ($short)" >&2
  exit 1
fi

echo "buf $("$buf" --version): breaking $root/proto against $against ($short)"
if "$buf" breaking "$root/proto" --against "$tmp/proto"; then
  echo "PASS: no breaking change against $against ($short)"
  exit 0
fi
echo "FAIL: breaking change(s) above against $against ($short)." >&2
echo "      v1 is published: add fields/RPCs instead, or start a v2 package" >&2
echo "      (see proto/README.md)." >&2
exit 1
