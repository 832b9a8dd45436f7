#!/usr/bin/env bash
# Brings rtc up on this machine: the whole local topology of DESIGN.md §8,
# started by deploy/local/up.sh (this script only delegates to it; see its
# header for the details). On a Debian 12 machine as root it installs what
# is missing (build dependencies, nginx, coturn, redis-server,
# redis-sentinel), builds, makes development secrets on first run
# (.run/local/secrets: a P-256 signing key, an API key file, a TURN secret,
# Redis ACL passwords, a self-signed TLS certificate for the edge — never
# committed), starts Redis primary + replica + three Sentinels, rtc-auth and
# two rtc-signaling pods (through Sentinel), two rtc-bridge, coturn and the
# nginx edge, and waits until every health check passes.
#
#   scripts/up.sh [start]   build if needed, start, wait for health (default)
#   scripts/up.sh status    what is running and whether it is healthy
#   scripts/up.sh stop      SIGTERM, wait for a clean exit (SIGKILL after 20 s)
#   scripts/up.sh restart   stop, then start
#   scripts/up.sh run       start, stay in the foreground, Ctrl-C stops
#
# The demo call app (clients/web) is served by nginx on
# https://localhost:8443/ (through the edge, WSS to the bridges) and on
# http://127.0.0.1:3000/ (plain HTTP, bridges on 8080/8090 directly).
#
# Logs: .run/local/logs/<name>.log; pids: .run/local/<name>.pid. Running it
# again while everything is up says so and exits 0. RTC_BIN_DIR=DIR uses
# binaries from DIR instead of building into build/bin.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)/deploy/local/up.sh" "$@"
