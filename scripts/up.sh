#!/usr/bin/env bash
# Brings rtc up on this machine: installs build dependencies, builds, makes
# development secrets on first run (.run/secrets: a P-256 signing key, an API
# key file, a TURN secret — never committed), starts Redis on 6379 (or uses
# the one already answering there), then rtc-auth and two rtc-signaling pods
# in the background in development mode (--dev) on their ports, and waits
# until each is ready (admin /readyz answers 200 and gRPC
# grpc.health.v1.Health/Check answers SERVING).
#
#   scripts/up.sh [start]   build if needed, start, wait for health (default)
#   scripts/up.sh status    what is running and whether it is ready
#   scripts/up.sh stop      SIGTERM, wait for a clean exit (SIGKILL after 20 s)
#   scripts/up.sh restart   stop, then start
#
# The demo call app (clients/web) is served on http://127.0.0.1:3000/ by
# Python's http.server (a development server; the nginx edge serves it in
# deployments).
#
# Logs: .run/logs/<name>.log; pids: .run/<name>.pid. Running it again while
# everything is up says so and exits 0. RTC_BIN_DIR=DIR uses binaries from DIR
# instead of building into build/bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN="$ROOT/.run"
LOGS="$RUN/logs"
HOST=127.0.0.1
PY=/usr/bin/python3
SECRETS="$RUN/secrets"
REDIS_PORT=6379
DEMO_PORT=3000
STOP_GRACE=20  # seconds; the services drain in-flight calls on SIGTERM
START_WAIT=30  # seconds for each service to become ready

# name  main port  admin port  (DESIGN.md §8). Two signaling pods share
# Redis; rtc-signaling-2 runs the rtc-signaling binary. The two bridges
# (WebSocket on their main port) reach auth and both pods.
SERVICES=(
	"rtc-auth 8081 9081"
	"rtc-signaling 50051 9051"
	"rtc-signaling-2 50052 9052"
	"rtc-bridge 8080 9080"
	"rtc-bridge-2 8090 9090"
)

# The binary a service runs.
bin_of() {
	case "$1" in
	rtc-signaling-*) echo rtc-signaling ;;
	rtc-bridge-*) echo rtc-bridge ;;
	*) echo "$1" ;;
	esac
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() {
	echo "up: $*" >&2
	exit 1
}

if [[ -n ${RTC_BIN_DIR:-} ]]; then
	BIN="$(cd "$RTC_BIN_DIR" && pwd -P)"
else
	BIN="$ROOT/build/bin"
fi

# pid of a running service from its pid file, or nothing. A pid file whose
# process is gone or is some other program (pid reused) is stale.
running_pid() {
	local name="$1" pid exe
	[[ -f $RUN/$name.pid ]] || return 0
	pid="$(<"$RUN/$name.pid")"
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
	# A rebuilt binary shows as "<path> (deleted)". Debian's redis-server is
	# a link to redis-check-rdb: recognise it by its process name.
	# Any build dir's binary counts (RTC_BIN_DIR may differ between start
	# and stop); the name alone tells it from a reused pid.
	exe="${exe% (deleted)}"
	if [[ ${exe##*/} == "$(bin_of "$name")" ]] ||
		[[ $name == redis-server && $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server ]] ||
		[[ $name == rtc-demo && $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *" -m http.server $DEMO_PORT "* ]]; then
		echo "$pid"
	fi
}

# A process that exited but was not reaped yet (our own child) still answers
# kill -0: look at its state instead.
alive() {
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

readyz() { curl -sf -o /dev/null --max-time 2 "http://$HOST:$1/readyz"; }

# grpc.health.v1.Health/Check for service "" through grpcio, with raw bytes:
# the request is an empty message, SERVING is b'\x08\x01' (field 1 = 1).
grpc_serving() {
	"$PY" - "$HOST:$1" "$2" <<'PYEOF'
import sys, grpc
target, deadline = sys.argv[1], float(sys.argv[2])
with grpc.insecure_channel(target) as ch:
    check = ch.unary_unary('/grpc.health.v1.Health/Check')
    try:
        resp = check(b'', timeout=deadline, wait_for_ready=True)
    except grpc.RpcError as e:
        sys.exit(f'{target}: Health/Check: {e.code().name}: {e.details()}')
if resp != b'\x08\x01':
    sys.exit(f'{target}: Health/Check: not SERVING (response bytes {resp.hex() or "empty"})')
PYEOF
}

build() {
	"$ROOT/scripts/deps.sh" --build-only --quiet
	echo "up: building (cmake --preset default, build/; log .run/logs/build.log)"
	mkdir -p "$LOGS"
	if ! (cd "$ROOT" && cmake --preset default &&
		cmake --build build -j"$(nproc)" --target rtc-auth rtc-signaling rtc-bridge rtcctl) >"$LOGS/build.log" 2>&1; then
		tail -n 30 "$LOGS/build.log" >&2
		die "build failed (log: .run/logs/build.log)"
	fi
}

endpoints() {
	local svc name port admin
	for svc in "${SERVICES[@]}"; do
		read -r name port admin <<<"$svc"
		if [[ $name == rtc-bridge* ]]; then
			printf '  %-16s ws://%s:%s/ws  admin http://%s:%s/{healthz,readyz,metrics}  log .run/logs/%s.log\n' \
				"$name" "$HOST" "$port" "$HOST" "$admin" "$name"
			continue
		fi
		printf '  %-16s gRPC h2c %s:%-5s  admin http://%s:%s/{healthz,readyz,metrics}  log .run/logs/%s.log\n' \
			"$name" "$HOST" "$port" "$HOST" "$admin" "$name"
	done
	printf '  %-16s http://%s:%s/  (demo call app; open it in two tabs)\n' rtc-demo "$HOST" "$DEMO_PORT"

}

# Waits until the service is ready: /readyz answers 200, then gRPC health
# answers SERVING. Returns 1 (after saying why) if its process exits or
# START_WAIT seconds pass.
wait_ready() {
	local name="$1" pid="$2" port="$3" admin="$4" t0=$SECONDS left
	until readyz "$admin"; do
		if ! alive "$pid"; then
			tail -n 20 "$LOGS/$name.log" >&2 || true
			echo "up: $name exited during startup (log: .run/logs/$name.log)" >&2
			return 1
		fi
		if ((SECONDS - t0 >= START_WAIT)); then
			echo "up: $name: /readyz on $HOST:$admin not 200 after ${START_WAIT}s (log: .run/logs/$name.log)" >&2
			return 1
		fi
		sleep 0.2
	done
	[[ $name == rtc-bridge* ]] && return 0 # a WebSocket port: /readyz covers its upstreams
	left=$((START_WAIT - (SECONDS - t0)))
	((left > 0)) || left=1
	if ! grpc_serving "$port" "$left"; then
		echo "up: $name: gRPC health on $HOST:$port is not SERVING (log: .run/logs/$name.log)" >&2
		return 1
	fi
}

# SIGTERM, wait up to STOP_GRACE seconds for a clean exit, then SIGKILL.
stop_one() {
	local name="$1" pid t0
	pid="$(running_pid "$name")"
	rm -f "$RUN/$name.pid"
	[[ -n $pid ]] || return 1
	kill -TERM "$pid" 2>/dev/null || true
	t0=$SECONDS
	while alive "$pid" && ((SECONDS - t0 < STOP_GRACE)); do
		sleep 0.2
	done
	if alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
		echo "up: $name (pid $pid) did not exit ${STOP_GRACE}s after SIGTERM: killed"
	else
		echo "up: $name (pid $pid) stopped after SIGTERM in $((SECONDS - t0))s"
	fi
}

# Development secrets, made once and kept in .run/secrets (mode 600).
make_secrets() {
	mkdir -p "$SECRETS"
	chmod 700 "$SECRETS"
	if [[ ! -s $SECRETS/signing-key.pem ]]; then
		(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$SECRETS/signing-key.pem")
		echo "up: generated a development signing key: .run/secrets/signing-key.pem"
	fi
	if [[ ! -s $SECRETS/api-keys ]]; then
		(umask 077 && printf 'dev %s admin\n' "$(openssl rand -hex 24)" >"$SECRETS/api-keys")
		echo "up: generated a development API key (id 'dev', admin): .run/secrets/api-keys"
	fi
	if [[ ! -s $SECRETS/turn-secret ]]; then
		(umask 077 && openssl rand -hex 32 >"$SECRETS/turn-secret")
	fi
}

redis_ping() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# Redis for development: ours (pid file) or any that already answers on 6379.
start_redis() {
	local pid t0
	pid="$(running_pid redis-server)"
	if [[ -n $pid ]] || redis_ping; then
		return 0
	fi
	command -v redis-server >/dev/null || die "redis-server not found (scripts/deps.sh --build-only installs it)"
	port_open "$REDIS_PORT" && die "$HOST:$REDIS_PORT is in use by something that is not Redis"
	mkdir -p "$RUN/redis"
	echo "up: starting redis-server ($HOST:$REDIS_PORT, data in .run/redis)"
	nohup redis-server --bind "$HOST" --port "$REDIS_PORT" --dir "$RUN/redis" --save '' \
		--appendonly no >>"$LOGS/redis-server.log" 2>&1 </dev/null 9>&- &
	echo $! >"$RUN/redis-server.pid"
	t0=$SECONDS
	until redis_ping; do
		alive "$(<"$RUN/redis-server.pid")" || die "redis-server exited (log: .run/logs/redis-server.log)"
		((SECONDS - t0 < START_WAIT)) || die "redis-server not answering after ${START_WAIT}s"
		sleep 0.2
	done
}

demo_up() { curl -sf -o /dev/null --max-time 2 "http://$HOST:$DEMO_PORT/demo/"; }

# The demo's static files: ours (pid file) or nothing else on the port.
start_demo() {
	local t0
	[[ -n $(running_pid rtc-demo) ]] && return 0
	port_open "$DEMO_PORT" && die "rtc-demo: $HOST:$DEMO_PORT is already in use by another process"
	echo "up: starting rtc-demo (http://$HOST:$DEMO_PORT/, files from clients/web)"
	nohup "$PY" -m http.server "$DEMO_PORT" --bind "$HOST" --directory "$ROOT/clients/web" \
		>>"$LOGS/rtc-demo.log" 2>&1 </dev/null 9>&- &
	echo $! >"$RUN/rtc-demo.pid"
	t0=$SECONDS
	until demo_up; do
		alive "$(<"$RUN/rtc-demo.pid")" || die "rtc-demo exited (log: .run/logs/rtc-demo.log)"
		((SECONDS - t0 < START_WAIT)) || die "rtc-demo not answering after ${START_WAIT}s"
		sleep 0.2
	done
}

# Flags of each service beyond --listen/--admin.
service_args() {
	case "$1" in
	rtc-auth)
		printf '%s\n' --dev --redis "redis://$HOST:$REDIS_PORT" \
			--signing-key "$SECRETS/signing-key.pem" --api-keys-file "$SECRETS/api-keys" \
			--turn-secret-file "$SECRETS/turn-secret"
		;;
	rtc-signaling*)
		printf '%s\n' --dev --redis "redis://$HOST:$REDIS_PORT" --auth "$HOST:8081" \
			--api-keys-file "$SECRETS/api-keys" --pod-id "${1#rtc-}"
		;;
	rtc-bridge*)
		printf '%s\n' --log-level info
		;;
	*) printf '%s\n' --dev ;;
	esac
}

cmd_start() {
	local svc name port admin p pid need=() started=() args=()
	for svc in "${SERVICES[@]}"; do
		read -r name port admin <<<"$svc"
		pid="$(running_pid "$name")"
		if [[ -z $pid ]]; then
			need+=("$svc")
		fi
	done
	if ((${#need[@]} == 0)) && [[ -n $(running_pid rtc-demo) ]]; then
		for svc in "${SERVICES[@]}"; do
			read -r name port admin <<<"$svc"
			wait_ready "$name" "$(running_pid "$name")" "$port" "$admin" ||
				die "$name is running but not ready (scripts/up.sh restart)"
		done
		echo "up: already up:"
		endpoints
		return 0
	fi

	if [[ -z ${RTC_BIN_DIR:-} ]]; then
		build
	fi
	"$PY" -c 'import grpc' 2>/dev/null || die "$PY cannot import grpc (scripts/deps.sh --build-only installs python3-grpcio)"
	command -v curl >/dev/null || die "curl not found (scripts/deps.sh --build-only installs it)"

	mkdir -p "$LOGS"
	make_secrets
	start_redis
	for svc in "${need[@]}"; do
		read -r name port admin <<<"$svc"
		[[ -x $BIN/$(bin_of "$name") ]] || die "$BIN/$(bin_of "$name") not found"
		for p in "$port" "$admin"; do
			if port_open "$p"; then
				die "$name: $HOST:$p is already in use by another process"
			fi
		done
	done
	for svc in "${need[@]}"; do
		read -r name port admin <<<"$svc"
		echo "up: starting $name (port $HOST:$port, admin $HOST:$admin)"
		mapfile -t args < <(service_args "$name")
		# fd 9 holds up.sh's lock: the services must not inherit it.
		nohup "$BIN/$(bin_of "$name")" --listen "$HOST:$port" --admin "$HOST:$admin" "${args[@]}" \
			>>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
		echo $! >"$RUN/$name.pid"
		started+=("$name")
	done
	for svc in "${need[@]}"; do
		read -r name port admin <<<"$svc"
		if ! wait_ready "$name" "$(<"$RUN/$name.pid")" "$port" "$admin"; then
			# Do not leave the system half up: stop what this run started.
			for name in "${started[@]}"; do
				stop_one "$name" || true
			done
			die "start failed"
		fi
		echo "up: $name ready"
	done
	start_demo
	echo "up: rtc is up (development mode):"
	endpoints
	printf '  %-16s %s:%s\n' redis "$HOST" "$REDIS_PORT"
	echo "  secrets: .run/secrets (API key for internal calls: .run/secrets/api-keys)"
	echo "  stop with: scripts/up.sh stop"
}

cmd_stop() {
	local svc name port admin any=0
	for svc in "${SERVICES[@]}"; do
		read -r name port admin <<<"$svc"
		if stop_one "$name"; then
			any=1
		fi
	done
	if stop_one rtc-demo; then
		any=1
	fi
	# Only a Redis this script started (pid file) is stopped.
	if stop_one redis-server; then
		any=1
	fi
	((any)) || echo "up: nothing running"
}

# Exit status 0 when every service runs and is ready, 3 otherwise.
cmd_status() {
	local svc name port admin pid ready rc=0
	for svc in "${SERVICES[@]}"; do
		read -r name port admin <<<"$svc"
		pid="$(running_pid "$name")"
		if [[ -z $pid ]]; then
			printf '  %-16s stopped\n' "$name"
			rc=3
			continue
		fi
		if readyz "$admin"; then ready=ready; else ready="NOT ready"; rc=3; fi
		local face="gRPC $HOST:$port"
		[[ $name == rtc-bridge* ]] && face="ws://$HOST:$port/ws"
		printf '  %-16s running (pid %s), %s: %s, admin http://%s:%s\n' \
			"$name" "$pid" "$ready" "$face" "$HOST" "$admin"
	done
	pid="$(running_pid rtc-demo)"
	if [[ -n $pid ]] && demo_up; then
		printf '  %-16s running (pid %s), http://%s:%s/\n' rtc-demo "$pid" "$HOST" "$DEMO_PORT"
	else
		printf '  %-16s %s\n' rtc-demo "${pid:+running (pid $pid), not answering}${pid:-stopped}"
		rc=3
	fi
	if redis_ping; then
		printf '  %-16s answering on %s:%s\n' redis "$HOST" "$REDIS_PORT"
	else
		printf '  %-16s not answering on %s:%s\n' redis "$HOST" "$REDIS_PORT"
		rc=3
	fi
	return "$rc"
}

mkdir -p "$RUN"
# One up.sh at a time (start and stop must not interleave).
exec 9>"$RUN/up.lock"
flock -n 9 || die "another scripts/up.sh is running"

case "${1:-start}" in
start) cmd_start ;;
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
