#!/usr/bin/env bash
# The whole rtc topology on one machine (DESIGN.md §8), as a developer or a
# test runs it: Redis primary (6379) + replica (6380) + three Sentinels
# (26379-26381, master name "rtc") with one ACL user per service, rtc-auth
# (8081, admin 9081) and two rtc-signaling pods (50051/9051, 50052/9052),
# both through Sentinel, two rtc-bridge (8080/9080, 8090/9090), coturn
# (3478), and the nginx edge: https://127.0.0.1:8443 (WSS /ws to the
# bridges, the demo at /), http://127.0.0.1:8000 (redirect to HTTPS) and the
# demo over plain HTTP on http://127.0.0.1:3000. Everything listens on
# 127.0.0.1 only.
#
#   deploy/local/up.sh [start]  install what is missing, build if needed,
#                               start, wait until every health check passes
#   deploy/local/up.sh run      start, then stay in the foreground: Ctrl-C
#                               (or SIGTERM) stops everything
#   deploy/local/up.sh status   what runs and whether it is healthy (exit 3
#                               when something is not)
#   deploy/local/up.sh stop     SIGTERM, wait, SIGKILL after a grace period
#   deploy/local/up.sh restart  stop, then start
#
# On a Debian 12 machine as root it apt-get installs what is missing
# (nginx, coturn, redis-server, redis-sentinel, openssl, curl, python3-grpcio;
# the build dependencies through scripts/deps.sh --build-only). On first run
# it generates the development secrets in <state>/secrets (mode 600, never
# committed): the signing key, the API keys file (key id "dev", admin), the
# TURN secret, the Redis ACL passwords and a self-signed TLS certificate for
# the edge (CN localhost, SAN localhost + 127.0.0.1; trust
# <state>/secrets/edge.crt).
#
# Configs are rendered from the templates in deploy/redis, deploy/turn and
# deploy/edge into <state>. Logs: <state>/logs/<name>.log; pids:
# <state>/<name>.pid. Running start again while everything is up says so
# and exits 0; a port taken by another program fails before anything starts.
#
# Environment:
#   RTC_BIN_DIR=DIR       use the binaries in DIR instead of building
#                         into build/bin
#   RTC_LOCAL_STATE=DIR   state directory (default .run/local)
#   RTC_STOP_GRACE=S      seconds between SIGTERM and SIGKILL (default 20)
#   RTC_START_WAIT=S      seconds each component may take to be healthy
#                         (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
DEPLOY="$ROOT/deploy"
STATE="${RTC_LOCAL_STATE:-$ROOT/.run/local}"
HOST=127.0.0.1
PY=/usr/bin/python3
STOP_GRACE="${RTC_STOP_GRACE:-20}"
START_WAIT="${RTC_START_WAIT:-60}"
MASTER_NAME=rtc

REDIS_PORTS=(6379 6380)
SENTINEL_PORTS=(26379 26380 26381)
TURN_PORT=3478
TURN_MIN_PORT=49160
TURN_MAX_PORT=49200
EDGE_PORT=8443
HTTP_PORT=8000
DEMO_PORT=3000

# name  main port  admin port (DESIGN.md §8). rtc-signaling-2 runs the
# rtc-signaling binary, rtc-bridge-2 the rtc-bridge binary.
SERVICES=(
	"rtc-auth 8081 9081"
	"rtc-signaling 50051 9051"
	"rtc-signaling-2 50052 9052"
	"rtc-bridge 8080 9080"
	"rtc-bridge-2 8090 9090"
)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() {
	echo "up: $*" >&2
	exit 1
}
say() { echo "up: $*"; }

mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd -P)"
LOGS="$STATE/logs"
SECRETS="$STATE/secrets"

if [[ -n ${RTC_BIN_DIR:-} ]]; then
	BIN="$(cd "$RTC_BIN_DIR" && pwd -P)"
else
	BIN="$ROOT/build/bin"
fi

# ---- processes -------------------------------------------------------------------

# The program (/proc/PID/comm) a component runs.
comm_of() {
	case "$1" in
	redis-*) echo redis-server ;;
	sentinel-*) echo redis-sentinel ;;
	rtc-signaling*) echo rtc-signaling ;;
	rtc-bridge*) echo rtc-bridge ;;
	coturn) echo turnserver ;;
	edge) echo nginx ;;
	*) echo "$1" ;;
	esac
}

# pid of a running component from its pid file, or nothing. A pid file
# whose process is gone or runs another program (pid reused) is stale.
running_pid() {
	local name="$1" pid comm want
	[[ -f $STATE/$name.pid ]] || return 0
	pid="$(<"$STATE/$name.pid")"
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	alive "$pid" || return 0
	comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
	want="$(comm_of "$name")"
	# Debian's redis-sentinel is a link to redis-server (either name shows).
	if [[ $comm == "$want" ]] || [[ $want == redis-sentinel && $comm == redis-server ]] ||
		[[ $want == redis-server && $comm == redis-check-rdb ]]; then
		echo "$pid"
	fi
}

# A process that exited but was not reaped yet still answers kill -0: look
# at its state instead.
alive() {
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

# Starts a component in the background (its own log, its pid file). The
# command may start with `env VAR=…` (secrets go through the environment,
# not the command line): env execs the program, so $! is its pid. fd 9 holds
# up.sh's lock: children must not inherit it.
spawn() {
	local name="$1"
	shift
	nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
	echo $! >"$STATE/$name.pid"
}

# wait_until NAME WHAT CMD…: polls CMD until it succeeds; fails (after
# showing the log) when the component exits or START_WAIT seconds pass.
wait_until() {
	local name="$1" what="$2" t0=$SECONDS pid
	shift 2
	pid="$(cat "$STATE/$name.pid" 2>/dev/null || true)"
	until "$@"; do
		if [[ -n $pid ]] && ! alive "$pid"; then
			tail -n 20 "$LOGS/$name.log" >&2 || true
			echo "up: $name exited during startup (log: $LOGS/$name.log)" >&2
			return 1
		fi
		if ((SECONDS - t0 >= START_WAIT)); then
			tail -n 20 "$LOGS/$name.log" >&2 || true
			echo "up: $name: $what not true after ${START_WAIT}s (log: $LOGS/$name.log)" >&2
			return 1
		fi
		sleep 0.2
	done
}

# SIGTERM, wait up to STOP_GRACE seconds for a clean exit, then SIGKILL.
stop_one() {
	local name="$1" pid t0
	pid="$(running_pid "$name")"
	rm -f "$STATE/$name.pid"
	[[ -n $pid ]] || return 1
	kill -TERM "$pid" 2>/dev/null || true
	t0=$SECONDS
	while alive "$pid" && ((SECONDS - t0 < STOP_GRACE)); do
		sleep 0.2
	done
	if alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
		say "$name (pid $pid) did not exit ${STOP_GRACE}s after SIGTERM: killed"
	else
		say "$name (pid $pid) stopped after SIGTERM in $((SECONDS - t0))s"
	fi
}

tcp_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
udp_taken() { ss -Hlnu "sport = :$1" 2>/dev/null | grep -q .; }

# ---- checks ----------------------------------------------------------------------

pw() { cat "$SECRETS/$1.password"; }

# redis-cli as the ops user (password through the environment).
rcli() {
	local port="$1"
	shift
	REDISCLI_AUTH="$(pw redis-ops)" timeout 5 redis-cli --no-auth-warning --user ops \
		-h "$HOST" -p "$port" "$@" 2>/dev/null
}
scli() {
	local port="$1"
	shift
	REDISCLI_AUTH="$(pw sentinel-auth)" timeout 5 redis-cli --no-auth-warning \
		-h "$HOST" -p "$port" "$@" 2>/dev/null
}

redis_ping() { [[ $(rcli "$1" PING) == PONG ]]; }
redis_role() { rcli "$1" ROLE | head -n 1; }
replica_synced() { rcli "$1" INFO replication | grep -q '^master_link_status:up'; }

# The Sentinel knows the primary, a replica and the two other Sentinels
# (so a failover can reach quorum).
sentinel_ready() {
	local port="$1" addr
	addr="$(scli "$port" SENTINEL get-master-addr-by-name "$MASTER_NAME" | tr '\n' ' ')"
	[[ $addr == "$HOST "* ]] || return 1
	[[ $(scli "$port" SENTINEL master "$MASTER_NAME" | awk 'p { print; exit } $0 == "num-other-sentinels" { p = 1 }') -ge 2 ]] || return 1
	[[ $(scli "$port" SENTINEL master "$MASTER_NAME" | awk 'p { print; exit } $0 == "num-slaves" { p = 1 }') -ge 1 ]]
}

readyz() { curl -sf -o /dev/null --max-time 2 "http://$HOST:$1/readyz"; }

# grpc.health.v1.Health/Check for SERVICE through grpcio, with raw bytes:
# the request is field 1 = service name, SERVING is b'\x08\x01'.
grpc_serving() {
	"$PY" - "$HOST:$1" "$2" <<'PYEOF'
import sys, grpc
target, service = sys.argv[1], sys.argv[2].encode()
req = (b'\x0a' + bytes([len(service)]) + service) if service else b''
with grpc.insecure_channel(target) as ch:
    check = ch.unary_unary('/grpc.health.v1.Health/Check')
    try:
        resp = check(req, timeout=3)
    except grpc.RpcError as e:
        sys.exit(1)
sys.exit(0 if resp == b'\x08\x01' else 1)
PYEOF
}

service_ready() {
	local name="$1" port="$2" admin="$3"
	readyz "$admin" || return 1
	case "$name" in
	rtc-auth) grpc_serving "$port" rtc.auth.v1.Auth ;;
	rtc-signaling*) grpc_serving "$port" rtc.signaling.v1.Signaling ;;
	esac
}

# A STUN Binding request over UDP: coturn answers Binding Success.
stun_ok() {
	"$PY" - "$HOST" "$TURN_PORT" <<'PYEOF'
import os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
tid = os.urandom(12)
s.sendto(struct.pack('!HHI', 1, 0, 0x2112A442) + tid, (sys.argv[1], int(sys.argv[2])))
try:
    d = s.recv(2048)
except OSError:
    sys.exit(1)
sys.exit(0 if d[:2] == b'\x01\x01' and d[8:20] == tid else 1)
PYEOF
}

edge_ok() {
	curl -sf -o /dev/null --max-time 3 --cacert "$SECRETS/edge.crt" "https://$HOST:$EDGE_PORT/healthz" &&
		curl -sf -o /dev/null --max-time 3 "http://$HOST:$DEMO_PORT/demo/" &&
		[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$HOST:$HTTP_PORT/") == 301 ]]
}

# ---- setup -----------------------------------------------------------------------

# apt-get installs what is missing (Debian 12, as root).
install_deps() {
	local missing=() pkg cmd
	for pkg in nginx:nginx coturn:turnserver redis-server:redis-server redis-sentinel:redis-sentinel \
		redis-tools:redis-cli openssl:openssl curl:curl iproute2:ss; do
		cmd="${pkg#*:}"
		command -v "$cmd" >/dev/null || missing+=("${pkg%%:*}")
	done
	"$PY" -c 'import grpc' 2>/dev/null || missing+=(python3-grpcio)
	((${#missing[@]} == 0)) && return 0
	((EUID == 0)) || die "missing: ${missing[*]} (run as root, or apt-get install them)"
	say "installing ${missing[*]}"
	# RUNLEVEL=1: the packages must not start their system services (ours
	# run with their own configs and ports).
	if ! { apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >>"$LOGS/apt.log" 2>&1; then
		tail -n 20 "$LOGS/apt.log" >&2
		die "apt-get install ${missing[*]} failed (log: $LOGS/apt.log)"
	fi
}

build() {
	"$ROOT/scripts/deps.sh" --build-only --quiet
	say "building (cmake --preset default, build/; log $LOGS/build.log)"
	if ! (cd "$ROOT" && cmake --preset default &&
		cmake --build build -j"$(nproc)" --target rtc-auth rtc-signaling rtc-bridge rtcctl) >"$LOGS/build.log" 2>&1; then
		tail -n 30 "$LOGS/build.log" >&2
		die "build failed (log: $LOGS/build.log)"
	fi
}

# A secret file made once (mode 600) from a command's output.
secret() {
	local file="$SECRETS/$1"
	shift
	[[ -s $file ]] && return 0
	(umask 077 && "$@" >"$file.tmp" && mv "$file.tmp" "$file")
	say "generated $file"
}

api_key_line() { printf 'dev %s admin\n' "$(openssl rand -hex 24)"; }

make_secrets() {
	local u
	mkdir -p "$SECRETS"
	chmod 700 "$SECRETS"
	if [[ ! -s $SECRETS/signing-key.pem ]]; then
		(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$SECRETS/signing-key.pem")
		say "generated a development signing key: $SECRETS/signing-key.pem"
	fi
	secret api-keys api_key_line
	secret turn-secret openssl rand -hex 32
	for u in redis-signaling redis-auth redis-replication redis-sentinel redis-ops sentinel-auth; do
		secret "$u.password" openssl rand -hex 24
	done
	if [[ ! -s $SECRETS/edge.crt || ! -s $SECRETS/edge.key ]]; then
		(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-days 825 -subj /CN=localhost -keyout "$SECRETS/edge.key" -out "$SECRETS/edge.crt" \
			-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
			-addext "extendedKeyUsage=serverAuth" 2>>"$LOGS/openssl.log")
		say "generated a self-signed TLS certificate for the edge: $SECRETS/edge.crt"
	fi
	chmod 600 "$SECRETS"/*
}

# render TEMPLATE OUT KEY=VALUE…: replaces each @KEY@ in TEMPLATE.
render() {
	local tmpl="$1" out="$2" text kv
	shift 2
	text="$(<"$tmpl")"
	for kv in "$@"; do
		text="${text//@${kv%%=*}@/${kv#*=}}"
	done
	if [[ $text =~ @[A-Z0-9_]+@ ]]; then
		die "$tmpl: placeholder ${BASH_REMATCH[0]} left unfilled"
	fi
	(umask 077 && printf '%s\n' "$text" >"$out")
}

redis_conf() {
	local port="$1" dir="$STATE/redis-$1" replicaof=""
	mkdir -p "$dir"
	[[ $port == "${REDIS_PORTS[0]}" ]] || replicaof="replicaof $HOST ${REDIS_PORTS[0]}"
	render "$DEPLOY/redis/redis.conf" "$dir/redis.conf" "PORT=$port" "DIR=$dir" \
		"REPLICATION_PASSWORD=$(pw redis-replication)" "REPLICAOF=$replicaof"
	render "$DEPLOY/redis/users.acl" "$dir/users.acl.tmp" \
		"SIGNALING_PASSWORD=$(pw redis-signaling)" "AUTH_PASSWORD=$(pw redis-auth)" \
		"REPLICATION_PASSWORD=$(pw redis-replication)" "SENTINEL_PASSWORD=$(pw redis-sentinel)" \
		"OPS_PASSWORD=$(pw redis-ops)"
	# Redis ACL files allow neither comments nor blank lines.
	grep -Ev '^[[:space:]]*(#|$)' "$dir/users.acl.tmp" >"$dir/users.acl"
	rm -f "$dir/users.acl.tmp"
}

sentinel_conf() {
	local port="$1" dir="$STATE/sentinel-$1"
	mkdir -p "$dir"
	render "$DEPLOY/redis/sentinel.conf" "$dir/sentinel.conf" "PORT=$port" "DIR=$dir" \
		"SENTINEL_AUTH_PASSWORD=$(pw sentinel-auth)" "MASTER_NAME=$MASTER_NAME" \
		"PRIMARY_PORT=${REDIS_PORTS[0]}" "SENTINEL_PASSWORD=$(pw redis-sentinel)"
}

turn_conf() {
	mkdir -p "$STATE/turn"
	render "$DEPLOY/turn/turnserver.conf" "$STATE/turn/turnserver.conf" "LISTEN_IP=$HOST" \
		"RELAY_IP=$HOST" "PORT=$TURN_PORT" "MIN_PORT=$TURN_MIN_PORT" "MAX_PORT=$TURN_MAX_PORT" \
		"TURN_SECRET=$(<"$SECRETS/turn-secret")" "REALM=rtc.local" "STATE=$STATE" "LOGS=$LOGS" \
		"DEV_ONLY=allow-loopback-peers"
}

edge_conf() {
	local d="$STATE/nginx" user_line="" t
	mkdir -p "$d/logs"
	for t in client_body proxy fastcgi uwsgi scgi; do
		mkdir -p "$d/tmp/$t"
	done
	# As root, the workers run as nobody (the master only binds and reads
	# the key); they need the temp dirs and read access to clients/web.
	if ((EUID == 0)); then
		user_line="user nobody nogroup;"
		chown -R nobody:nogroup "$d/tmp"
	fi
	render "$DEPLOY/edge/nginx.conf" "$d/nginx.conf" "USER_LINE=$user_line" "STATE=$STATE" \
		"LOGS=$LOGS" "MIME_TYPES=/etc/nginx/mime.types" "LISTEN_IP=$HOST" "EDGE_PORT=$EDGE_PORT" \
		"HTTP_PORT=$HTTP_PORT" "DEMO_PORT=$DEMO_PORT" "BRIDGE1_PORT=8080" "BRIDGE2_PORT=8090" \
		"WS_RATE=10" "WS_BURST=20" "WS_CONNS=100" "TLS_CERT=$SECRETS/edge.crt" \
		"TLS_KEY=$SECRETS/edge.key" "WEB_ROOT=$ROOT/clients/web"
}

# ---- components ------------------------------------------------------------------

# Every component in start order: name, TCP ports it listens on.
components() {
	local p svc
	for p in "${REDIS_PORTS[@]}"; do echo "redis-$p $p"; done
	for p in "${SENTINEL_PORTS[@]}"; do echo "sentinel-$p $p"; done
	for svc in "${SERVICES[@]}"; do echo "$svc"; done
	echo "coturn $TURN_PORT"
	echo "edge $EDGE_PORT $HTTP_PORT $DEMO_PORT"
}

svc_ports() {
	local svc name port admin
	for svc in "${SERVICES[@]}"; do
		read -r name port admin <<<"$svc"
		if [[ $name == "$1" ]]; then
			echo "$port $admin"
			return
		fi
	done
}

sentinel_list() {
	local p out=""
	for p in "${SENTINEL_PORTS[@]}"; do out+="${out:+,}$HOST:$p"; done
	echo "$out"
}

start_component() {
	local name="$1" port admin auth_redis=()
	case "$name" in
	redis-*)
		port="${name#redis-}"
		redis_conf "$port"
		say "starting $name (Redis $HOST:$port)"
		spawn "$name" redis-server "$STATE/$name/redis.conf"
		;;
	sentinel-*)
		port="${name#sentinel-}"
		sentinel_conf "$port"
		say "starting $name (Sentinel $HOST:$port)"
		spawn "$name" redis-sentinel "$STATE/$name/sentinel.conf"
		;;
	rtc-auth)
		read -r port admin <<<"$(svc_ports "$name")"
		say "starting $name (gRPC $HOST:$port, admin $HOST:$admin)"
		# rtc-auth reaches Redis through Sentinel when it has the flags
		# (older builds: the primary directly). With --sentinels only the
		# user and password of RTC_REDIS count, but the URL needs a host.
		if "$BIN/rtc-auth" --help 2>/dev/null | grep -q -- '--sentinels'; then
			auth_redis=("RTC_REDIS=redis://rtc-auth:$(pw redis-auth)@$HOST:${REDIS_PORTS[0]}" "RTC_SENTINELS=$(sentinel_list)"
				"RTC_MASTER_NAME=$MASTER_NAME" "RTC_SENTINEL_PASSWORD=$(pw sentinel-auth)")
		else
			say "rtc-auth has no --sentinels: using the primary $HOST:${REDIS_PORTS[0]} directly"
			auth_redis=("RTC_REDIS=redis://rtc-auth:$(pw redis-auth)@$HOST:${REDIS_PORTS[0]}")
		fi
		spawn "$name" env "${auth_redis[@]}" "$BIN/rtc-auth" --listen "$HOST:$port" --admin "$HOST:$admin" \
			--dev --signing-key "$SECRETS/signing-key.pem" --api-keys-file "$SECRETS/api-keys" \
			--turn-secret-file "$SECRETS/turn-secret" \
			--turn-urls "turn:$HOST:$TURN_PORT?transport=udp,turn:$HOST:$TURN_PORT?transport=tcp" \
			--stun-urls "stun:$HOST:$TURN_PORT"
		;;
	rtc-signaling*)
		read -r port admin <<<"$(svc_ports "$name")"
		say "starting $name (gRPC $HOST:$port, admin $HOST:$admin, Redis through Sentinel)"
		spawn "$name" env "RTC_REDIS=redis://rtc-signaling:$(pw redis-signaling)@$HOST:${REDIS_PORTS[0]}" \
			"RTC_SENTINELS=$(sentinel_list)" "RTC_MASTER_NAME=$MASTER_NAME" \
			"RTC_SENTINEL_PASSWORD=$(pw sentinel-auth)" \
			"$BIN/rtc-signaling" --listen "$HOST:$port" --admin "$HOST:$admin" --dev \
			--auth "$HOST:8081" --api-keys-file "$SECRETS/api-keys" --pod-id "${name#rtc-}"
		;;
	rtc-bridge*)
		read -r port admin <<<"$(svc_ports "$name")"
		say "starting $name (WebSocket ws://$HOST:$port/ws, admin $HOST:$admin)"
		spawn "$name" "$BIN/rtc-bridge" --listen "$HOST:$port" --admin "$HOST:$admin" \
			--upstream "rtc.auth.v1.Auth=$HOST:8081" \
			--upstream "rtc.signaling.v1.Signaling=$HOST:50051,$HOST:50052"
		;;
	coturn)
		turn_conf
		say "starting coturn (STUN/TURN $HOST:$TURN_PORT udp+tcp, relay ports $TURN_MIN_PORT-$TURN_MAX_PORT)"
		spawn "$name" turnserver -c "$STATE/turn/turnserver.conf"
		;;
	edge)
		edge_conf
		nginx -t -q -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf" >>"$LOGS/edge.log" 2>&1 ||
			{
				tail -n 5 "$LOGS/edge.log" >&2
				die "nginx -t failed for $STATE/nginx/nginx.conf"
			}
		say "starting the nginx edge (https://$HOST:$EDGE_PORT, http://$HOST:$HTTP_PORT, demo http://$HOST:$DEMO_PORT)"
		spawn "$name" nginx -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf" -g 'daemon off;'
		;;
	esac
}

# Health of a component (quiet): 0 when healthy.
healthy() {
	local name="$1" port admin
	case "$name" in
	redis-*)
		port="${name#redis-}"
		redis_ping "$port" || return 1
		# A replica counts once it is in sync (the primary: once it answers).
		[[ $(redis_role "$port") == master ]] || replica_synced "$port"
		;;
	sentinel-*) sentinel_ready "${name#sentinel-}" ;;
	rtc-*)
		read -r port admin <<<"$(svc_ports "$name")"
		service_ready "$name" "$port" "$admin"
		;;
	coturn) stun_ok ;;
	edge) edge_ok ;;
	esac
}

what_of() {
	case "$1" in
	redis-*) echo "PING + ROLE (replica: master_link_status:up)" ;;
	sentinel-*) echo "SENTINEL get-master-addr-by-name $MASTER_NAME, 2 other Sentinels, 1 replica" ;;
	rtc-bridge*) echo "/readyz 200" ;;
	rtc-*) echo "/readyz 200 and gRPC health SERVING" ;;
	coturn) echo "STUN Binding answered on udp $HOST:$TURN_PORT" ;;
	edge) echo "https://$HOST:$EDGE_PORT/healthz 200, http://$HOST:$DEMO_PORT/demo/ 200, http://$HOST:$HTTP_PORT/ 301" ;;
	esac
}

endpoints() {
	local svc name port admin
	echo "  edge (WSS + demo)   https://localhost:$EDGE_PORT/  (wss://localhost:$EDGE_PORT/ws; certificate $SECRETS/edge.crt)"
	echo "  demo (dev, HTTP)    http://$HOST:$DEMO_PORT/  (open it in two tabs)"
	echo "  HTTP -> HTTPS       http://$HOST:$HTTP_PORT/"
	for svc in "${SERVICES[@]}"; do
		read -r name port admin <<<"$svc"
		if [[ $name == rtc-bridge* ]]; then
			printf '  %-19s ws://%s:%s/ws  admin http://%s:%s/{healthz,readyz,metrics}\n' "$name" "$HOST" "$port" "$HOST" "$admin"
		else
			printf '  %-19s gRPC h2c %s:%s  admin http://%s:%s/{healthz,readyz,metrics}\n' "$name" "$HOST" "$port" "$HOST" "$admin"
		fi
	done
	echo "  redis               primary $HOST:${REDIS_PORTS[0]}, replica $HOST:${REDIS_PORTS[1]} (ACL users; ops password in $SECRETS/redis-ops.password)"
	echo "  sentinels           $(sentinel_list)  master name '$MASTER_NAME' (password $SECRETS/sentinel-auth.password)"
	echo "  coturn              stun:$HOST:$TURN_PORT turn:$HOST:$TURN_PORT (REST credentials from rtc-auth)"
	echo "  logs                $LOGS/"
	echo "  secrets             $SECRETS/ (API key for internal calls: $SECRETS/api-keys)"
}

# Waits until each named component is healthy; on failure stops everything
# this run started (in reverse order) and exits.
wait_healthy() {
	local n i
	for n in "$@"; do
		if ! wait_until "$n" "$(what_of "$n")" healthy "$n"; then
			for ((i = ${#started[@]} - 1; i >= 0; i--)); do
				stop_one "${started[i]}" || true
			done
			die "start failed: everything this run started is stopped again"
		fi
		say "$n healthy"
	done
}

cmd_start() {
	local line name ports p pid need=() started=() busy=()
	while read -r line; do
		read -r name ports <<<"$line"
		pid="$(running_pid "$name")"
		[[ -n $pid ]] || need+=("$line")
	done < <(components)

	if ((${#need[@]} == 0)); then
		while read -r line; do
			read -r name _ <<<"$line"
			healthy "$name" || die "$name is running but not healthy ($(what_of "$name")); try: $0 restart"
		done < <(components)
		say "already up:"
		endpoints
		return 0
	fi

	# Before starting anything: every port we need must be free.
	for line in "${need[@]}"; do
		read -r name ports <<<"$line"
		for p in $ports; do
			tcp_open "$p" && busy+=("$name: $HOST:$p (tcp) is in use by another process")
		done
		if [[ $name == rtc-* ]]; then
			read -r _ p <<<"$(svc_ports "$name")"
			tcp_open "$p" && busy+=("$name: admin $HOST:$p (tcp) is in use by another process")
		fi
		[[ $name == coturn ]] && udp_taken "$TURN_PORT" && busy+=("coturn: udp port $TURN_PORT is in use by another process")
	done
	if ((${#busy[@]})); then
		printf 'up: %s\n' "${busy[@]}" >&2
		die "ports taken: nothing started (stop what holds them, or $0 stop if it is an older run of this stack)"
	fi

	install_deps
	[[ -n ${RTC_BIN_DIR:-} ]] || build
	local b
	for b in rtc-auth rtc-signaling rtc-bridge; do
		[[ -x $BIN/$b ]] || die "$BIN/$b not found (build it, or set RTC_BIN_DIR)"
	done
	make_secrets

	# Start in order; each tier healthy before the next (the two data
	# nodes, the three Sentinels, the two pods and the two bridges each start
	# together).
	local pending=()
	for line in "${need[@]}"; do
		read -r name _ <<<"$line"
		start_component "$name"
		started+=("$name")
		pending+=("$name")
		case "$name" in
		redis-"${REDIS_PORTS[0]}" | sentinel-"${SENTINEL_PORTS[0]}" | sentinel-"${SENTINEL_PORTS[1]}" | rtc-signaling | rtc-bridge) continue ;;
		esac
		wait_healthy "${pending[@]}"
		pending=()
	done
	((${#pending[@]} == 0)) || wait_healthy "${pending[@]}"
	say "rtc is up (local topology, development mode):"
	endpoints
	echo "  stop with: $0 stop"
}

cmd_stop() {
	local names=() line name any=0 i
	while read -r line; do
		read -r name _ <<<"$line"
		names+=("$name")
	done < <(components)
	# Reverse order: edge first, Redis last.
	for ((i = ${#names[@]} - 1; i >= 0; i--)); do
		if stop_one "${names[i]}"; then any=1; fi
	done
	((any)) || say "nothing running"
}

# Exit status 0 when every component runs and is healthy, 3 otherwise.
cmd_status() {
	local line name pid rc=0 extra
	while read -r line; do
		read -r name _ <<<"$line"
		pid="$(running_pid "$name")"
		if [[ -z $pid ]]; then
			printf '  %-16s stopped\n' "$name"
			rc=3
			continue
		fi
		extra=""
		[[ $name == redis-* ]] && extra=", role $(redis_role "${name#redis-}")"
		if healthy "$name"; then
			printf '  %-16s running (pid %s), healthy%s\n' "$name" "$pid" "$extra"
		else
			printf '  %-16s running (pid %s), NOT healthy: %s%s\n' "$name" "$pid" "$(what_of "$name")" "$extra"
			rc=3
		fi
	done < <(components)
	if [[ -s $SECRETS/sentinel-auth.password ]]; then
		printf '  %-16s %s\n' primary "$(scli "${SENTINEL_PORTS[0]}" SENTINEL get-master-addr-by-name "$MASTER_NAME" | tr '\n' ' ')"
	fi
	return "$rc"
}

cmd_run() {
	cmd_start
	# Let `up.sh stop`/`status` run from another terminal meanwhile.
	flock -u 9
	trap 'trap - INT TERM; echo; flock 9; cmd_stop; exit 0' INT TERM
	say "running in the foreground: Ctrl-C stops everything"
	while :; do
		sleep 3600 &
		wait $! || true
	done
}

mkdir -p "$LOGS"
# One start / stop / restart / run per state dir at a time (they must not
# interleave). status only reads: it takes no lock, so checking on a start
# from another terminal (or a script polling status) never makes it fail.
case "${1:-start}" in
status | -h | --help) ;;
*)
	exec 9>"$STATE/up.lock"
	flock -n 9 || die "another up.sh start/stop/run is running on $STATE"
	;;
esac

case "${1:-start}" in
start) cmd_start ;;
run) cmd_run ;;
stop) cmd_stop ;;
status) cmd_status ;;
restart)
	cmd_stop
	cmd_start
	;;
-h | --help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
