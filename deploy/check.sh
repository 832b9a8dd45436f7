#!/usr/bin/env bash
# Validates deploy/k8s and deploy/docker without a cluster or a Docker daemon:
#   1. yamllint (deploy/.yamllint) on every YAML file of deploy/k8s, deploy/docker, deploy/local
#   2. kubectl on every k8s manifest, offline: `kubectl label --local --dry-run=client`
#      parses each object (apiVersion, kind, metadata), and `kubectl kustomize`
#      builds deploy/k8s (every listed resource exists and parses)
#   3. deploy/check_flags.py BIN_DIR: every flag, RTC_* variable and port
#      against the binaries' --help, Services/probes/NetworkPolicies against
#      the containerPorts; then its --self-test (broken copies must fail)
#   4. shellcheck on the shell scripts of deploy/docker and this script
#
#   deploy/check.sh BIN_DIR        (BIN_DIR: rtc-auth, rtc-signaling, rtc-bridge, rtcctl)
#
# A missing tool is a failure naming the apt-get command, never a skip.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: deploy/check.sh BIN_DIR" >&2
	exit 2
fi
bindir="$1"
deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python=/usr/bin/python3

need() { # need TOOL PACKAGE
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "check.sh: $1 is missing: apt-get install $2" >&2
		exit 1
	fi
}
need yamllint yamllint
need kubectl kubernetes-client
need shellcheck shellcheck
need "$python" python3
if ! "$python" -c 'import yaml' 2>/dev/null; then
	echo "check.sh: python3 yaml module missing: apt-get install python3-yaml" >&2
	exit 1
fi

fail=0
step() { echo "== $*"; }

step "yamllint"
mapfile -t yamls < <(find "$deploy/k8s" "$deploy/docker" "$deploy/local" -type f \( -name '*.yaml' -o -name '*.yml' \) 2>/dev/null | sort)
if ! yamllint -s -c "$deploy/.yamllint" "${yamls[@]}"; then
	fail=1
else
	echo "yamllint: ok (${#yamls[@]} files)"
fi

step "kubectl (offline: --local / kustomize; no cluster is contacted)"
# No kubeconfig, no cache: nothing can reach a cluster by accident.
kube_home="$(mktemp -d)"
trap 'rm -rf "$kube_home"' EXIT
kc() { HOME="$kube_home" KUBECONFIG="$kube_home/none" kubectl "$@"; }
objects=0
for f in "$deploy"/k8s/*.yaml; do
	[[ $(basename "$f") == kustomization.yaml ]] && continue
	if ! out="$(kc label --local --dry-run=client -f "$f" rtc.check/parsed=true -o name 2>"$kube_home/err")"; then
		echo "kubectl: $f: $(grep -v 'Config not found' "$kube_home/err")" >&2
		fail=1
		continue
	fi
	objects=$((objects + $(wc -l <<<"$out")))
done
if ! built="$(kc kustomize "$deploy/k8s" 2>&1)"; then
	echo "kubectl kustomize deploy/k8s: $built" >&2
	fail=1
else
	echo "kubectl: ok ($objects objects parsed; kustomize built $(grep -c '^kind:' <<<"$built") objects)"
fi

step "check_flags.py $bindir"
if ! "$python" "$deploy/check_flags.py" "$bindir"; then
	fail=1
fi
if ! "$python" "$deploy/check_flags.py" "$bindir" --self-test; then
	fail=1
fi

step "shellcheck"
mapfile -t scripts < <(find "$deploy/docker" -type f -name '*.sh' | sort)
if ! shellcheck "${BASH_SOURCE[0]}" "${scripts[@]}"; then
	fail=1
else
	echo "shellcheck: ok"
fi

if [[ $fail != 0 ]]; then
	echo "check.sh: FAILED" >&2
	exit 1
fi
echo "check.sh: all deploy checks passed"
