#!/usr/bin/env bash
# Generates development secrets for compose.yaml into deploy/docker/secrets/
# (never commit it) and the passwords compose interpolates into deploy/docker/.env.
# Idempotent: existing files are kept. Needs openssl and sha256sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$here/secrets"
mkdir -p "$dir"
chmod 700 "$dir"

pw() { openssl rand -hex 24; }

if [[ ! -f $here/.env ]]; then
	umask 077
	{
		echo "REDIS_AUTH_PASSWORD=$(pw)"
		echo "REDIS_SIGNALING_PASSWORD=$(pw)"
		echo "REDIS_REPLICATION_PASSWORD=$(pw)"
		echo "REDIS_SENTINEL_USER_PASSWORD=$(pw)"
		echo "SENTINEL_PASSWORD=$(pw)"
	} >"$here/.env"
fi
# shellcheck disable=SC1091
source "$here/.env"

hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

umask 077
[[ -f $dir/signing-key.pem ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/signing-key.pem" 2>/dev/null
[[ -f $dir/api-keys ]] || echo "dev $(pw) admin" >"$dir/api-keys"
[[ -f $dir/turn-secret ]] || pw >"$dir/turn-secret"
if [[ ! -f $dir/tls.crt ]]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
		-subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
fi
# Redis ACL users (passwords stored as SHA-256). Same rules as deploy/k8s/README.md.
cat >"$dir/users.acl" <<ACL
user default off
user rtc-auth on #$(hash "$REDIS_AUTH_PASSWORD") ~rtc:auth:* resetchannels -@all +@read +@write +@connection +role +ping
user rtc-signaling on #$(hash "$REDIS_SIGNALING_PASSWORD") ~rtc:* &rtc:* +@all -@admin -@dangerous +role +info +wait
user rtc-replication on #$(hash "$REDIS_REPLICATION_PASSWORD") resetchannels -@all +psync +replconf +ping
user rtc-sentinel on #$(hash "$REDIS_SENTINEL_USER_PASSWORD") allchannels -@all +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill
ACL
# The containers run as other users than the one running this script.
chmod 644 "$dir"/*
chmod 755 "$dir"
echo "secrets in $dir, passwords in $here/.env"
