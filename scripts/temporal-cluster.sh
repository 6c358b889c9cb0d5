#!/usr/bin/env bash
# The production-shaped Temporal: the server built from its pinned Go module (all services in one process),
# on Debian's PostgreSQL 15, schemas set up by temporal-sql-tool, the frontend and internode traffic on
# mutual TLS with certificates made here by openssl, the namespaces and livemerge's search attributes
# registered. docker-compose.yml describes the same topology for users' deployments.
#
#   temporal-cluster.sh build                    build the server and its SQL tool once (cached)
#   temporal-cluster.sh up DIR [NAMESPACE...]   fresh databases, certificates, start, register; prints env
#   temporal-cluster.sh start DIR                start the server again on the same databases (after kill)
#   temporal-cluster.sh kill DIR                 SIGKILL the server (every service at once)
#   temporal-cluster.sh down DIR                 stop the server, drop its databases, remove DIR
#   temporal-cluster.sh env DIR                  the client environment (TEMPORAL_ADDRESS, TEMPORAL_TLS_*)
#
# Environment: LIVEMERGE_CLUSTER_PORT (frontend gRPC, default 17233; every other port moves with it),
# LIVEMERGE_CLUSTER_CACHE (the Go build cache, default /var/cache/livemerge/temporal-v1.32.1: outside the
# work tree, so a second run on the same machine does not rebuild; the first build takes ~11 min here).
set -euo pipefail
V=v1.32.1
cmd=${1:?build|up|start|kill|down|env DIR}
[ "$cmd" = build ] && set -- build /nonexistent
dir=$(realpath -m "${2:?DIR}")
shift 2
cache=${LIVEMERGE_CLUSTER_CACHE:-/var/cache/livemerge/temporal-$V}
# The port `up` chose is kept in DIR: start/kill/env find it there.
port=${LIVEMERGE_CLUSTER_PORT:-$(cat "$dir/port" 2>/dev/null || echo 17233)}
off=$((port - 7233))
# One cluster per DIR: its databases are named after it, so two stages never share state.
db="lm_$(printf '%s' "$dir" | sha1sum | cut -c1-10)"
server="$cache/go/bin/server"
sqltool="$cache/go/bin/sql"
M="$cache/go/pkg/mod/go.temporal.io/server@$V"
log() { echo "[temporal-cluster] $*" >&2; }

build() {
  [ -x "$server" ] && [ -x "$sqltool" ] && return
  mkdir -p "$cache"
  log "building go.temporal.io/server@$V into $cache (once per machine; ~11 min on 2 cores)"
  local t0=$SECONDS
  (
    # The machine's Go (Debian 12 has none new enough; the image's is /usr/local/go), never a downloaded one.
    export PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local
    export GOPATH="$cache/go" GOCACHE="$cache/go/cache" GOFLAGS=-mod=mod CGO_ENABLED=0
    go install -tags disable_grpc_modules "go.temporal.io/server/cmd/server@$V"
    go install "go.temporal.io/server/cmd/tools/sql@$V"
  ) >"$cache/build.log" 2>&1 || { tail -20 "$cache/build.log" >&2; exit 1; }
  log "built in $((SECONDS - t0)) s"
}

postgres() {
  pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='temporal'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE temporal LOGIN PASSWORD 'temporal' CREATEDB\""
}

sql() { "$sqltool" --plugin postgres12 --ep 127.0.0.1 -p 5432 -u temporal --pw temporal "$@"; }

drop_databases() {
  for d in "$db" "${db}_visibility"; do
    su postgres -c "PGOPTIONS=--client-min-messages=warning psql -qc 'DROP DATABASE IF EXISTS $d WITH (FORCE)'"
  done
}

schemas() {
  drop_databases
  exec 3>>"$dir/schema.log"
  sql --db "$db" create >/dev/null 2>&3
  sql --db "$db" setup-schema -v 0.0 >/dev/null 2>&3
  sql --db "$db" update-schema -d "$M/schema/postgresql/v12/temporal/versioned" >/dev/null 2>&3
  sql --db "${db}_visibility" create >/dev/null 2>&3
  sql --db "${db}_visibility" setup-schema -v 0.0 >/dev/null 2>&3
  sql --db "${db}_visibility" update-schema -d "$M/schema/postgresql/v12/visibility/versioned" >/dev/null 2>&3
}

# A CA, one certificate for the server (frontend and internode, server and client use), one for clients.
certs() {
  local c="$dir/certs"
  mkdir -p "$c"
  (
    cd "$c"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=livemerge test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem 2>/dev/null
    issue() { # name CN extendedKeyUsage [subjectAltName]
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
        "$3" "${4:+subjectAltName=$4}" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile "$1.ext" \
        -out "$1.pem" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue server temporal serverAuth,clientAuth "DNS:temporal,DNS:localhost,IP:127.0.0.1"
    issue client livemerge clientAuth
    chmod 0644 ./*.pem ./*.key # the test VMs' QEMU never reads these; the workers run as root
  )
}

config() {
  local c="$dir/certs" p
  mkdir -p "$dir/config/dynamicconfig"
  p() { echo $(($1 + off)); }
  cat >"$dir/config/production.yaml" <<EOF
# Generated by scripts/temporal-cluster.sh: the frontend at 127.0.0.1:$port, mTLS everywhere.
log:
  stdout: true
  level: warn
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: 4
  datastores:
    default:
      sql: &sql
        pluginName: postgres12
        databaseName: $db
        connectAddr: 127.0.0.1:5432
        connectProtocol: tcp
        user: temporal
        password: temporal
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    visibility:
      sql:
        <<: *sql
        databaseName: ${db}_visibility
        maxConns: 4
        maxIdleConns: 4
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  pprof:
    port: $(p 7936)
  metrics:
    prometheus:
      framework: tally
      timerType: histogram
      listenAddress: 127.0.0.1:$(p 8000)
  tls:
    # The same mutual TLS between the services and at the frontend.
    internode: &mtls
      server:
        certFile: $c/server.pem
        keyFile: $c/server.key
        requireClientAuth: true
        clientCaFiles: [$c/ca.pem]
      client:
        serverName: temporal
        rootCaFiles: [$c/ca.pem]
    frontend: *mtls
    systemWorker:
      certFile: $c/server.pem
      keyFile: $c/server.key
      client:
        serverName: temporal
        rootCaFiles: [$c/ca.pem]
services:
  frontend:
    rpc: { grpcPort: $port, membershipPort: $(p 6933), httpPort: $(p 7243), bindOnLocalHost: true }
  history:
    rpc: { grpcPort: $(p 7234), membershipPort: $(p 6934), bindOnLocalHost: true }
  matching:
    rpc: { grpcPort: $(p 7235), membershipPort: $(p 6935), bindOnLocalHost: true }
  worker:
    rpc: { grpcPort: $(p 7239), membershipPort: $(p 6939), bindOnLocalHost: true }
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: 127.0.0.1:$port
dcRedirectionPolicy:
  policy: noop
dynamicConfigClient:
  filepath: $dir/config/dynamicconfig/production.yaml
  pollInterval: 10s
EOF
  # Worker Deployments (versioning) and ids as long as livemerge's; the rest are the server's defaults.
  cat >"$dir/config/dynamicconfig/production.yaml" <<'EOF'
limit.maxIDLength:
  - value: 255
frontend.workerVersioningWorkflowAPIs:
  - value: true
system.enableDeploymentVersions:
  - value: true
frontend.enableUpdateWorkflowExecution:
  - value: true
EOF
}

env_lines() {
  cat <<EOF
TEMPORAL_ADDRESS=127.0.0.1:$port
TEMPORAL_TLS_CERT=$dir/certs/client.pem
TEMPORAL_TLS_KEY=$dir/certs/client.key
TEMPORAL_TLS_CA=$dir/certs/ca.pem
TEMPORAL_TLS_SERVER_NAME=temporal
EOF
}

# The temporal CLI's own names for the same settings.
tcli() {
  "${TEMPORAL_CLI:-temporal}" "$@" --address "127.0.0.1:$port" --tls-cert-path "$dir/certs/client.pem" \
    --tls-key-path "$dir/certs/client.key" --tls-ca-path "$dir/certs/ca.pem" --tls-server-name temporal
}

start() {
  [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null && { log "already running"; return; }
  local t0=$SECONDS
  "$server" --root "$dir" --config config --env production --allow-no-auth start >>"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/server.pid"
  until tcli operator cluster health >/dev/null 2>&1; do
    kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
    [ $((SECONDS - t0)) -lt 90 ] || { log "not healthy after 90 s"; tail -20 "$dir/server.log" >&2; exit 1; }
    sleep 0.5
  done
  log "server healthy at 127.0.0.1:$port (pid $(cat "$dir/server.pid")) in $((SECONDS - t0)) s"
}

register() {
  local ns a t0=$SECONDS
  for ns in default "$@"; do
    tcli operator namespace describe -n "$ns" >/dev/null 2>&1 || tcli operator namespace create -n "$ns" --retention 24h >/dev/null
  done
  # New namespaces reach the frontend's cache within ~10 s: until then adding attributes fails.
  for ns in default "$@"; do
    for a in LivemergeVmId LivemergeHostId LivemergeStage; do
      until tcli workflow list -n "$ns" --query "$a=\"x\"" --limit 1 >/dev/null 2>&1; do
        tcli operator search-attribute create -n "$ns" --name "$a" --type Keyword >/dev/null 2>&1 || true
        [ $((SECONDS - t0)) -lt 120 ] || { log "cannot register $a in $ns"; exit 1; }
        sleep 0.5
      done
    done
  done
  log "namespaces registered: default $* ($((SECONDS - t0)) s)"
}

case $cmd in
build) build ;;
up)
  build
  postgres
  [ -f "$dir/server.pid" ] && kill "$(cat "$dir/server.pid")" 2>/dev/null || true
  rm -rf "$dir" && mkdir -p "$dir"
  echo "$port" >"$dir/port"
  schemas
  certs
  config
  start
  register "$@"
  env_lines
  ;;
start) start ;;
kill)
  pid=$(cat "$dir/server.pid")
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  ;;
down)
  if [ -f "$dir/server.pid" ]; then
    pid=$(cat "$dir/server.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ -x "$sqltool" ] && pg_ctlcluster 15 main status >/dev/null 2>&1 && drop_databases
  rm -rf "$dir"
  ;;
env) env_lines ;;
*)
  echo "usage: $0 build | up|start|kill|down|env DIR [NAMESPACE...]" >&2
  exit 2
  ;;
esac
