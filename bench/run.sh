#!/usr/bin/env bash
# Gatehouse load benchmark: drives the real release server over HTTP from a second process (wrk)
# and prints a markdown table. See BENCHMARKS.md for what it measures and recorded results.
#
# How to run (from the repository root):
#
#   cargo build --release            # once; the benchmark only uses target/release/gatehouse
#   apt-get install -y wrk           # the load generator (C, one event-loop thread per -t)
#   bench/run.sh                     # both backends: sqlite, then postgres
#   bench/run.sh sqlite              # or one of them
#   bench/run.sh soak                # SQLite: the client-credentials peak, then a long run at
#                                    # about 70 % of it (BENCH_SOAK_SECS=600) with the server's
#                                    # RSS sampled every 10 s; reports rate, errors, RSS drift
#   bench/run.sh oidc-provider       # panva's oidc-provider (bench/oidc-provider.mjs, Node.js,
#                                    # in memory) under the same client-credentials and
#                                    # introspection scenarios; `all` runs it after the two
#                                    # backends and prints Gatehouse-on-SQLite / oidc-provider
#
# Needs: wrk, python3 (standard library), curl; for postgres also psql and a PostgreSQL server
# that the admin URL below can create databases on. A fresh database (or SQLite file) is used
# per run and removed afterwards.
#
# Per backend: write a config into a temp dir, start `gatehouse serve --config FILE`, wait for
# GET /readyz, then for each scenario a short warm-up and a measured wrk run:
#   client_credentials  POST /oauth2/token grant_type=client_credentials (bench-service, Basic)
#   introspect          POST /oauth2/introspect of one client-credentials access token
#   introspect_once     POST /oauth2/introspect of tokens never introspected before, each once
#                       (minted just before by a client-credentials run, mint_tokens)
#   authorize           GET /oauth2/authorize with a signed-in session -> 302 with a code
#                       (this is how the codes for the next scenario are minted; reported too)
#   code                POST /oauth2/token grant_type=authorization_code, each code once (PKCE)
#   refresh             POST /oauth2/token grant_type=refresh_token; every token presented once,
#                       the rotated one it returns goes back in the queue for a later request
#   portal              GET / with alice's session: right after she signs in (one session, no
#                       grants), and again after the runs above (thousands of live grants)
#   saml                brokered SAML sign-ins, each as its browser makes it: the IdP's signed
#                       response POSTed to the ACS -> GET the finish step with the browser's
#                       cookie -> GET the app's waiting authorization request -> 302 with a code.
#                       Reported in sign-ins/s (three requests each); latency is per request.
#                       The sign-ins are started beforehand (prepare.py saml-starts: the app's
#                       authorization request, then the connector's redirect to the IdP), and
#                       the IdP's answers signed for them (RSA-2048, the test fixtures' IdP key)
#                       by target/release/examples/bench_saml, which is also this scenario's
#                       load generator instead of wrk (one thread; see examples/bench_saml.rs).
#                       Build it with `cargo build --release --example bench_saml`
# then read the server's peak RSS (VmHWM) and stop it with SIGTERM.
#
# Knobs (environment): BENCH_DURATION=10 (s, measured run), BENCH_WARMUP=3 (s),
#   BENCH_THREADS=1 and BENCH_CONNECTIONS=32 (wrk -t/-c; one wrk thread = at most one core;
#   32 connections as in issue 16's own measurement, 16 before its fourth step),
#   BENCH_PORT=18080, BENCH_PG_ADMIN_URL=postgresql://postgres@127.0.0.1:5432/test,
#   BENCH_BIN=target/release/gatehouse, BENCH_KEEP=1 keeps the work dir (configs, server logs,
#   raw wrk output) and prints its path. BENCH_POLICY=1 gives bench-app an access policy
#   (allowed_groups, groups_claim_filter) and a portal tile, and alice the allowed group, so the
#   authorize, refresh and portal scenarios check a policy (binaries from issue 13 on).
#   BENCH_SQLITE_SYNCHRONOUS=full|normal sets `sqlite_synchronous` (default: the server's, full;
#   binaries from issue 16 on). BENCH_PERF=<scenario> (e.g. code) records a `perf record -g`
#   profile of the server during that scenario's measured run into the work dir (with BENCH_KEEP=1).
#   BENCH_SAML_RATE=2000: sign-ins prepared per second of run (warm-up and measured); a run that
#   runs out of them is marked invalid. BENCH_SAML_USERS=1000: distinct people signing in (the
#   first sign-in of each creates the local user). BENCH_SAML_TOOL: the signer and load generator.
#
# A row's "errors" counts every non-expected status (non-2xx; non-302 for authorize), every
# response without the expected body (`access_token`, `"active":true`, a new refresh_token),
# socket errors and timeouts. Any error is also printed with the first failing response, and
# the script then exits with status 1.
#
# The CPU column is read from /proc over the run less its first and last half second, in cores
# (this machine has `nproc` of them): the server process, wrk (or the SAML tool), all `postgres` processes,
# interrupt time (irq + softirq, mostly loopback networking; some of it is also charged to the
# processes), and whatever else was busy. A non-zero "other" means the machine was not quiet;
# the processes behind it are listed under the table. Before each backend the script waits
# (up to BENCH_IDLE_WAIT=300 s) for the machine to be idle.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
BIN="${BENCH_BIN:-$ROOT/target/release/gatehouse}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-3}"
THREADS="${BENCH_THREADS:-1}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
PORT="${BENCH_PORT:-18080}"
PG_ADMIN_URL="${BENCH_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/test}"
BASE="http://127.0.0.1:$PORT"
VERIFIER="bench-pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"
SERVICE_BASIC="$(printf '%s' 'bench-service:bench-service-secret-0123456789' | base64 -w0)"
APP_BASIC="$(printf '%s' 'bench-app:bench-app-secret-0123456789' | base64 -w0)"
SAML_KEYS="$ROOT/tests/fixtures/saml/keys"
SAML_TOOL="${BENCH_SAML_TOOL:-$ROOT/target/release/examples/bench_saml}"
SAML_RATE="${BENCH_SAML_RATE:-2000}"

backends=("$@")
if [[ ${#backends[@]} -eq 0 || "${backends[0]}" == "all" ]]; then backends=(sqlite postgres oidc-provider); fi
for b in "${backends[@]}"; do
  [[ "$b" == sqlite || "$b" == postgres || "$b" == oidc-provider || "$b" == soak ]] ||
    { echo "usage: $0 [sqlite|postgres|oidc-provider|soak|all]..." >&2; exit 2; }
done
[[ -x "$BIN" ]] || { echo "no server binary at $BIN (cargo build --release)" >&2; exit 1; }
if [[ " ${backends[*]} " == *" sqlite "* || " ${backends[*]} " == *" postgres "* ]]; then
  [[ -x "$SAML_TOOL" ]] ||
    { echo "no SAML response signer at $SAML_TOOL (cargo build --release --example bench_saml)" >&2; exit 1; }
fi
for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/gatehouse-bench.XXXXXX)"
SERVER_PID=""
PG_DB=""
FAILED=0
declare -A RPS=() # "backend scenario" -> requests/s, for the ratio lines

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server $SERVER_PID did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

drop_db() {
  if [[ -n "$PG_DB" ]]; then
    psql "$PG_ADMIN_URL" -qAt -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null || true
    PG_DB=""
  fi
}

cleanup() {
  stop_server
  drop_db
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

write_config() { # file database_url
  cat >"$1" <<EOF
issuer = "$BASE"
listen = "127.0.0.1:$PORT"
database_url = "$2"
key_encryption_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
log_format = "json"
$(sqlite_synchronous_key)

[login]
max_failures_per_username = 1000000
max_failures_per_ip = 1000000
max_starts_per_ip_per_minute = 100000000

[[clients]]
client_id = "bench-service"
client_secret = "bench-service-secret-0123456789"
grant_types = ["client_credentials"]
scopes = ["api:read"]
redirect_uris = ["https://bench.example/unused"]

[[clients]]
client_id = "bench-app"
client_secret = "bench-app-secret-0123456789"
redirect_uris = ["http://127.0.0.1:9/cb"]
scopes = ["openid", "profile", "email", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
first_party = true
$(policy_keys)

[[connectors]]
id = "local"
type = "local"
name = "Local accounts"

[[connectors.users]]
username = "alice"
password_hash = "\$argon2id\$v=19\$m=19456,t=2,p=1\$uVHQekRhPbu6UhtrGd89bg\$wFZw5yhno320bIS1oN5yLa67qUxkZyABA70reR9tS8A"
email = "alice@example.com"
name = "Alice Example"
$([[ "${BENCH_POLICY:-0}" == 1 ]] && echo 'groups = ["staff", "bench-users"]')

[[connectors]]
id = "bench-saml"
type = "saml"
name = "Bench IdP"
idp_metadata_file = "$SAML_KEYS/idp-metadata.xml"
EOF
}

sqlite_synchronous_key() {
  [[ -n "${BENCH_SQLITE_SYNCHRONOUS:-}" ]] || return 0
  printf 'sqlite_synchronous = "%s"\n' "$BENCH_SQLITE_SYNCHRONOUS"
}

policy_keys() {
  [[ "${BENCH_POLICY:-0}" == 1 ]] || return 0
  cat <<'KEYS'
allowed_groups = ["bench-users"]
groups_claim_filter = "bench-"
description = "The benchmark's application"
launch_url = "https://bench.example/"
KEYS
}

proc_status() { # field (kB) of the server's /proc status
  awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status"
}

# snapshot FILE: CPU time so far, in clock ticks, of the machine and of every process:
#   "machine UPTIME BUSY IRQ"  busy = user nice system irq softirq steal of /proc/stat; irq =
#                              irq softirq (mostly loopback networking, charged to no process)
#   "PID COMM TICKS"           per process, utime + stime of /proc/PID/stat, which includes all
#                              of its threads ("kworker/1:2-events" is counted as "kworker")
snapshot() {
  {
    awk '{ printf "machine %s ", $1 }' /proc/uptime
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $7 + $8 }' /proc/stat
    # A process that exits between the glob and the read makes cat fail; under pipefail that
    # would end the whole run.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
      match($0, /.*\) /); open = index($0, "(")
      comm = substr($0, open + 1, RLENGTH - open - 2); split(substr($0, RLENGTH + 1), f, " ")
      sub(/\/.*/, "", comm); gsub(/ /, "_", comm); print $1, comm, f[12] + f[13]
    }'
  } >"$1"
}

# cpu_use BEFORE AFTER: sets R_CPU, "server / wrk / postgres / irq / other" in cores between two
# snapshots, and R_OTHERS, the biggest of the other processes. A process that exits between the
# snapshots is lost, which is why they are taken inside the run: PostgreSQL backends do exit
# when wrk disconnects at its end.
cpu_use() {
  local result
  result="$(awk -v t="$(getconf CLK_TCK)" -v server="$SERVER_PID" -v pgsql="$([[ -n "$PG_DB" ]] && echo 1 || echo 0)" '
    FNR == 1 { if (NR == 1) { t0 = $2; busy0 = $3; irq0 = $4 } else { t1 = $2; busy1 = $3; irq1 = $4 }; next }
    NR == FNR { before[$1] = $3; next }
    {
      d = $3 - before[$1]; if (d < 0) d = 0
      if ($1 == server) s += d; else if ($2 == "postgres") pg += d; else if ($2 == "wrk" || $2 == "bench_saml") w += d; else use[$2] += d
    }
    END {
      secs = t1 - t0; c = t * secs
      irq = (irq1 - irq0) / c; other = (busy1 - busy0) / c - (s + pg + w) / c - irq; if (other < 0) other = 0
      printf "%.2f / %.2f / %s / %.2f / %.2f|", s / c, w / c, pgsql ? sprintf("%.2f", pg / c) : "–", irq, other
      n = 0
      for (k in use) if (use[k] / c >= 0.03) { names[++n] = k }
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (use[names[j]] > use[names[i]]) { x = names[i]; names[i] = names[j]; names[j] = x }
      for (i = 1; i <= n && i <= 4; i++) printf "%s%s %.2f", (i > 1 ? ", " : ""), names[i], use[names[i]] / c
    }' "$1" "$2")"
  R_CPU="${result%%|*}"
  R_OTHERS="${result#*|}"
}


# wait_idle: the numbers are only meaningful on an otherwise idle machine. Waits (up to
# BENCH_IDLE_WAIT seconds, default 300) until the machine is less than 0.3 cores busy over 3 s.
wait_idle() {
  local waited=0 a b busy
  while :; do
    a="$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)"
    sleep 3
    b="$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)"
    busy="$(awk -v a="$a" -v b="$b" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / t / 3 }')"
    if awk -v x="$busy" 'BEGIN { exit !(x < 0.3) }'; then return 0; fi
    if ((waited >= ${BENCH_IDLE_WAIT:-300})); then
      log "the machine is still $busy cores busy after ${waited} s of waiting; measuring anyway (see the 'other' CPU column)"
      return 0
    fi
    ((waited == 0)) && log "the machine is $busy cores busy with other work; waiting for it to be idle"
    waited=$((waited + 3))
  done
}

# run_wrk OUT_FILE SCENARIO SECONDS [VAR=value ...]: one wrk run (for saml, one run of the SAML
# tool, given BENCH_SAML_FILE=…); sets R_* from its RESULT line and the CPU use (R_CPU, R_OTHERS)
# over the run less its first and last half second.
run_wrk() {
  local out="$1" scenario="$2" seconds="$3"
  shift 3
  if [[ "$scenario" == saml ]]; then
    "$SAML_TOOL" run "$BASE" bench-saml "$seconds" "$CONNECTIONS" "${1#BENCH_SAML_FILE=}" >"$out" 2>&1 &
  else
    env "$@" BENCH_SCENARIO="$scenario" BENCH_THREADS="$THREADS" \
      BENCH_SERVICE_BASIC="$SERVICE_BASIC" BENCH_APP_BASIC="$APP_BASIC" BENCH_VERIFIER="$VERIFIER" \
      wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s --latency \
      -s "$BENCH/gatehouse.lua" "$BASE" >"$out" 2>&1 &
  fi
  local wrk_pid=$! edge
  if [[ -n "${BENCH_PERF:-}" && "$scenario" == "$BENCH_PERF" && "$seconds" == "$DURATION" ]]; then
    perf record -F 499 -g -p "$SERVER_PID" -o "$WORK/perf.$scenario.data" -- sleep "$seconds" >/dev/null 2>&1 &
  fi
  edge="$(awk -v s="$seconds" 'BEGIN { print (s <= 2 ? 0.25 : 0.5) }')"
  sleep "$edge"
  snapshot "$out.cpu0"
  sleep "$(awk -v s="$seconds" -v e="$edge" 'BEGIN { print s - 2 * e }')"
  snapshot "$out.cpu1"
  if ! wait "$wrk_pid"; then
    log "wrk failed:"
    cat "$out" >&2
    return 1
  fi
  cpu_use "$out.cpu0" "$out.cpu1"
  local line
  line="$(grep '^RESULT ' "$out" | tail -1)" || { log "no RESULT line from wrk:"; cat "$out" >&2; return 1; }
  R_RPS="$(sed -E 's/.* rps=([^ ]+).*/\1/' <<<"$line")"
  R_P50="$(sed -E 's/.* p50_ms=([^ ]+).*/\1/' <<<"$line")"
  R_P99="$(sed -E 's/.* p99_ms=([^ ]+).*/\1/' <<<"$line")"
  R_REQ="$(sed -E 's/.* requests=([^ ]+).*/\1/' <<<"$line")"
  R_EXHAUSTED="$(sed -E 's/.* exhausted=([^ ]+).*/\1/' <<<"$line")"
  R_COMPLETED="$(sed -E 's/.* completed=([^ ]+).*/\1/' <<<"$line")"
  R_SECONDS="$(sed -E 's/.* duration_s=([^ ]+).*/\1/' <<<"$line")"
  local bad_status bad_body sock
  bad_status="$(sed -E 's/.* bad_status=([^ ]+).*/\1/' <<<"$line")"
  bad_body="$(sed -E 's/.* bad_body=([^ ]+).*/\1/' <<<"$line")"
  sock="$(sed -E 's/.* socket_errors=([^ ]+).*/\1/' <<<"$line")"
  R_ERRORS=$((bad_status + bad_body + sock + R_EXHAUSTED))
  R_NOTE=""
  ((bad_status > 0)) && R_NOTE+="unexpected status: $bad_status; "
  ((bad_body > 0)) && R_NOTE+="unexpected body: $bad_body; "
  ((sock > 0)) && R_NOTE+="socket errors/timeouts: $sock; "
  ((R_EXHAUSTED > 0)) && R_NOTE+="ran out of prepared input (run not valid); "
  if ((R_ERRORS > 0)); then
    log "$scenario: $R_ERRORS errors (${R_NOTE%; }); first failing responses:"
    grep '^FIRST_ERROR ' "$out" >&2 || true
  fi
}

# row FILE BACKEND LABEL: the table row of the last run_wrk, appended to FILE.
row() {
  local file="$1" backend="$2" label="$3" errors="$R_ERRORS"
  if ((R_ERRORS > 0)); then
    errors="**$R_ERRORS** (${R_NOTE%; })"
    FAILED=1
  fi
  RPS["$backend $label"]="$R_RPS"
  printf '| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s |\n' "$backend" "$label" "$R_RPS" "$R_P50" "$R_P99" \
    "$R_REQ" "$errors" "$R_CPU" >>"$file"
  log "$backend $label: $R_RPS req/s, p50 $R_P50 ms, p99 $R_P99 ms, $R_REQ requests, errors $R_ERRORS," \
    "CPU cores server/wrk/postgres/irq/other $R_CPU${R_OTHERS:+ (other processes: $R_OTHERS)}"
  if [[ -n "$R_OTHERS" ]]; then
    echo "- $backend, $label: other processes used (cores) $R_OTHERS" >>"$WORK/notes.md"
  fi
}

# measure BACKEND SCENARIO LABEL [VAR=value ...]: measured run, then one table row.
measure() {
  local backend="$1" scenario="$2" label="$3"
  shift 3
  run_wrk "$WORK/$backend/$scenario.txt" "$scenario" "$DURATION" "$@"
  row "$WORK/rows.md" "$backend" "$label"
}

warmup() { # BACKEND SCENARIO [VAR=value ...]
  local backend="$1" scenario="$2"
  shift 2
  run_wrk "$WORK/$backend/$scenario.warmup.txt" "$scenario" "$WARMUP" "$@"
  # Running out of prepared input only ends a warm-up early.
  ((R_ERRORS - R_EXHAUSTED == 0)) || log "warm-up of $scenario had $((R_ERRORS - R_EXHAUSTED)) errors (${R_NOTE%; })"
}

# mint_codes BACKEND NAME SECONDS COOKIE: authorization codes into $WORK/BACKEND/NAME.codes
mint_codes() {
  local backend="$1" name="$2" seconds="$3" cookie="$4"
  local dir="$WORK/$backend"
  rm -f "$dir/$name.codes".*
  run_wrk "$dir/$name.mint.txt" authorize "$seconds" BENCH_AUTHORIZE_PATH="$AUTHORIZE_PATH" \
    BENCH_COOKIE="$cookie" BENCH_CODES_OUT="$dir/$name.codes"
  cat "$dir/$name.codes".* >"$dir/$name.codes"
  MINTED="$(wc -l <"$dir/$name.codes")"
  ((R_ERRORS == 0)) || log "minting codes ($name) had $R_ERRORS errors (${R_NOTE%; })"
}

mint_tokens() { # BACKEND NAME SECONDS [VAR=value ...]
  local backend="$1" name="$2" seconds="$3"
  shift 3
  local dir="$WORK/$backend"
  rm -f "$dir/$name.tokens".*
  run_wrk "$dir/$name.mint-tokens.txt" mint_tokens "$seconds" BENCH_TOKENS_OUT="$dir/$name.tokens" "$@"
  cat "$dir/$name.tokens".* >"$dir/$name.tokens"
  MINTED="$(wc -l <"$dir/$name.tokens")"
  ((R_ERRORS == 0)) || log "minting tokens ($name) had $R_ERRORS errors (${R_NOTE%; })"
}

# saml_signins BACKEND NAME N: N started sign-ins and the IdP's signed answers to them, into
# $WORK/BACKEND/NAME.saml
saml_signins() {
  local backend="$1" name="$2" n="$3" dir="$WORK/$1"
  python3 "$BENCH/prepare.py" saml-starts "$BASE" bench-saml "$VERIFIER" "$n" "$dir/$name.saml-starts"
  "$SAML_TOOL" sign "$(date +%s)" "$SAML_KEYS/idp-rsa.key" https://idp.test/saml/metadata "$BASE/saml/bench-saml" \
    "$BASE/saml/bench-saml/acs" "${BENCH_SAML_USERS:-1000}" <"$dir/$name.saml-starts" >"$dir/$name.saml"
}

# run_saml BACKEND: the brokered sign-in scenario; the row's rate is completed sign-ins per second.
run_saml() {
  local backend="$1" dir="$WORK/$1" started
  started="$(date +%s)"
  saml_signins "$backend" warm $((WARMUP * SAML_RATE))
  saml_signins "$backend" measured $((DURATION * SAML_RATE))
  log "$backend: started and signed $(((WARMUP + DURATION) * SAML_RATE)) SAML sign-ins in $(($(date +%s) - started)) s"
  warmup "$backend" saml BENCH_SAML_FILE="$dir/warm.saml"
  run_wrk "$dir/saml.txt" saml "$DURATION" BENCH_SAML_FILE="$dir/measured.saml"
  local requests_per_second="$R_RPS"
  R_RPS="$(awk -v c="$R_COMPLETED" -v s="$R_SECONDS" 'BEGIN { printf "%.1f", c / s }')"
  row "$WORK/rows.md" "$backend" "brokered SAML sign-in: ACS → finish → code (sign-ins/s, 3 requests each; latency per request)"
  log "$backend: $R_COMPLETED SAML sign-ins completed, $requests_per_second requests/s"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

run_backend() {
  local backend="$1" dir="$WORK/$1" url
  mkdir -p "$dir"
  if [[ "$backend" == sqlite ]]; then
    url="sqlite://$dir/bench.db"
  else
    command -v psql >/dev/null || { echo "psql is required for the postgres backend" >&2; exit 1; }
    PG_DB="gatehouse_bench_$$_$RANDOM"
    psql "$PG_ADMIN_URL" -qAt -c "CREATE DATABASE $PG_DB" >/dev/null
    url="${PG_ADMIN_URL%/*}/$PG_DB"
  fi
  write_config "$dir/gatehouse.toml" "$url"

  wait_idle
  log "$backend: starting $BIN serve (database $url)"
  RUST_LOG=warn "$BIN" serve --config "$dir/gatehouse.toml" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  local ready=0
  for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz")" == 200 ]]; then ready=1; break; fi
    sleep 0.2
  done
  if ((ready == 0)); then
    log "server did not become ready; its log:"
    cat "$dir/server.log" >&2
    exit 1
  fi
  local rss_ready
  rss_ready="$(proc_status VmRSS)"
  log "$backend: ready (pid $SERVER_PID, RSS $(mib "$rss_ready") MiB)"

  # 1. client credentials
  warmup "$backend" client_credentials
  measure "$backend" client_credentials "client-credentials grant"

  # 2. introspection of one access token, as a resource server does
  python3 "$BENCH/prepare.py" cc-token "$BASE" "$SERVICE_BASIC" >"$dir/access_token"
  warmup "$backend" introspect BENCH_TOKEN_FILE="$dir/access_token"
  measure "$backend" introspect "introspection" BENCH_TOKEN_FILE="$dir/access_token"

  # 2b. introspection of tokens never seen before: each signature is verified, none is
  #     remembered from an earlier request. Tokens are minted for twice the run's length.
  mint_tokens "$backend" warm "$WARMUP"
  warmup "$backend" introspect_once BENCH_TOKENS_FILE="$dir/warm.tokens"
  mint_tokens "$backend" measured "$((DURATION * 2))"
  log "$backend: minted $MINTED access tokens"
  measure "$backend" introspect_once "introspection, first time (each token once)" BENCH_TOKENS_FILE="$dir/measured.tokens"

  # 3. the portal page, right after alice signs in; then authorization codes: mint codes
  #    with wrk, redeem each exactly once.
  #    Codes live 60 s: they are minted right before the run that redeems them, for 1.5 times
  #    its duration (minting is faster than redeeming); if they still run out, mint for 3 times
  #    its duration and run again (the oldest code is then 40 s old at the end).
  local cookie
  cookie="$(python3 "$BENCH/prepare.py" login "$BASE")"
  AUTHORIZE_PATH="$(python3 "$BENCH/prepare.py" authorize-path "$VERIFIER")"
  warmup "$backend" portal BENCH_COOKIE="$cookie"
  measure "$backend" portal "portal page (1 session, no grants)" BENCH_COOKIE="$cookie"
  mint_codes "$backend" warm "$WARMUP" "$cookie"
  warmup "$backend" code BENCH_CODES_FILE="$dir/warm.codes"
  local mint_secs=$(((DURATION * 3 + 1) / 2)) attempt
  for attempt in 1 2; do
    mint_codes "$backend" measured "$mint_secs" "$cookie"
    log "$backend: minted $MINTED codes in ${mint_secs} s"
    # The minting run is itself a measurement of the authorization endpoint (code issuance).
    ((attempt == 1)) && row "$dir/authorize-row.md" "$backend" "authorize → code (${mint_secs} s run)"
    run_wrk "$dir/code.try$attempt.txt" code "$DURATION" BENCH_CODES_FILE="$dir/measured.codes"
    ((R_EXHAUSTED == 0)) && break
    log "$backend: the $MINTED codes ran out during the redemption run; minting more and retrying"
    mint_secs=$((DURATION * 3))
  done
  cp "$dir/code.try$attempt.txt" "$dir/code.txt"
  row "$WORK/rows.md" "$backend" "authorization-code redemption"
  log "$backend: $R_REQ of $MINTED codes redeemed"

  # 4. refresh rotation: 4 seed tokens per connection, each from its own code redemption.
  local seeds=$((CONNECTIONS * 4))
  python3 "$BENCH/prepare.py" refresh-seeds "$BASE" "$cookie" "$APP_BASIC" "$VERIFIER" "$seeds" "$dir/warm.seeds"
  python3 "$BENCH/prepare.py" refresh-seeds "$BASE" "$cookie" "$APP_BASIC" "$VERIFIER" "$seeds" "$dir/measured.seeds"
  warmup "$backend" refresh BENCH_SEEDS_FILE="$dir/warm.seeds"
  measure "$backend" refresh "refresh rotation" BENCH_SEEDS_FILE="$dir/measured.seeds"
  measure "$backend" portal "portal page (after the runs: thousands of live grants)" BENCH_COOKIE="$cookie"

  # 5. brokered SAML sign-ins
  run_saml "$backend"

  cat "$dir/authorize-row.md" >>"$WORK/rows.md"

  local hwm rss
  hwm="$(proc_status VmHWM)"
  rss="$(proc_status VmRSS)"
  printf '| %s | **peak RSS (VmHWM) %s MiB**; RSS when ready %s MiB, after the runs %s MiB | | | | | | |\n' \
    "$backend" "$(mib "$hwm")" "$(mib "$rss_ready")" "$(mib "$rss")" >>"$WORK/rows.md"
  log "$backend: peak RSS $(mib "$hwm") MiB"

  stop_server
  local logged
  logged="$(grep -ciE '"level":"(ERROR|WARN)"' "$dir/server.log" || true)"
  if ((logged > 0)); then
    log "$backend: the server logged $logged warnings or errors (first 20):"
    grep -iE '"level":"(ERROR|WARN)"' "$dir/server.log" | head -20 >&2
    {
      echo "- $backend: the server logged $logged warnings/errors; by message:"
      grep -iE '"level":"(ERROR|WARN)"' "$dir/server.log" |
        sed -E 's/.*"level":"([A-Z]+)".*"message":"([^"]*)".*"target":"([^"]*)".*/\1 \3: \2/' | sort | uniq -c |
        sed -E 's/^ *([0-9]+) (.*)/  - \2 (×\1)/'
    } >>"$WORK/notes.md"
  fi
  drop_db
}

# The soak: is the server steady under long load? Client-credentials grants on SQLite for
# BENCH_SOAK_SECS (600) at about 70 % of the peak measured just before: each of N connections
# waits 1 ms before each request, N scaled from a trial run (BENCH_SOAK_TRIAL_SECS=5) at a first
# guess made from the peak and its p50. RSS is sampled every 10 s.
run_soak() {
  local backend=sqlite dir="$WORK/soak" soak_secs="${BENCH_SOAK_SECS:-600}"
  mkdir -p "$dir"
  write_config "$dir/gatehouse.toml" "sqlite://$dir/bench.db"
  wait_idle
  RUST_LOG=warn "$BIN" serve --config "$dir/gatehouse.toml" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz")" == 200 ]] && break
    sleep 0.2
  done
  local rss_ready peak connections
  rss_ready="$(proc_status VmRSS)"
  warmup soak client_credentials
  run_wrk "$dir/peak.txt" client_credentials "$DURATION"
  row "$WORK/rows.md" soak "client-credentials grant, peak"
  peak="$R_RPS"
  # A connection sends one request per (1 ms + its latency), the peak's p50 standing in for the
  # latency; but wrk's 1 ms timer fires late, so a short trial run at that guess measures what
  # one connection really does, and the count is scaled from it.
  connections="$(awk -v p="$peak" -v l="$R_P50" 'BEGIN { c = int(0.7 * p * (1 + l) / 1000 + 0.5); print (c < 1 ? 1 : c) }')"
  local trial_secs="${BENCH_SOAK_TRIAL_SECS:-5}" saved_connections="$CONNECTIONS" saved_duration="$DURATION"
  CONNECTIONS="$connections"
  run_wrk "$dir/trial.txt" client_credentials "$trial_secs" BENCH_DELAY_MS=1
  row "$WORK/rows.md" soak "client-credentials grant, ${trial_secs} s trial with -c$connections, 1 ms apart"
  connections="$(awk -v p="$peak" -v r="$R_RPS" -v c="$connections" 'BEGIN { n = (r > 0) ? int(0.7 * p * c / r + 0.5) : c; print (n < 1 ? 1 : n) }')"
  log "soak: peak $peak/s; $soak_secs s with $connections connections, 1 ms apart"
  : >"$dir/rss.txt"
  ( while kill -0 "$SERVER_PID" 2>/dev/null; do echo "$(date +%s) $(proc_status VmRSS)" >>"$dir/rss.txt"; sleep 10; done ) &
  local sampler=$!
  CONNECTIONS="$connections"
  DURATION="$soak_secs"
  run_wrk "$dir/soak.txt" client_credentials "$soak_secs" BENCH_DELAY_MS=1
  CONNECTIONS="$saved_connections"
  DURATION="$saved_duration"
  kill "$sampler" 2>/dev/null || true
  row "$WORK/rows.md" soak "client-credentials grant, ${soak_secs} s at $(awk -v r="$R_RPS" -v p="$peak" 'BEGIN { printf "%.0f", 100 * r / p }') % of the peak (-c$connections, 1 ms apart)"
  # RSS after the first minute: first and last sample, lowest and highest.
  local first last low high
  read -r first last low high < <(awk -v t0="$(head -1 "$dir/rss.txt" | cut -d' ' -f1)" '$1 - t0 >= 60 && $2 != "" {
      if (n++ == 0) { f = $2; lo = $2; hi = $2 } ; l = $2; if ($2 < lo) lo = $2; if ($2 > hi) hi = $2
    } END { print f, l, lo, hi }' "$dir/rss.txt")
  printf '| soak | **RSS** when ready %s MiB; from minute 1 to the end of the run: first %s, last %s, lowest %s, highest %s MiB (%s samples every 10 s) | | | | | | |\n' \
    "$(mib "$rss_ready")" "$(mib "$first")" "$(mib "$last")" "$(mib "$low")" "$(mib "$high")" "$(wc -l <"$dir/rss.txt")" >>"$WORK/rows.md"
  stop_server
}

# The comparison: panva's oidc-provider, one Node.js process keeping its opaque tokens in
# memory, under the scenarios both servers have. Its CPU shows in the "server" column.
run_oidc_provider() {
  local backend=oidc-provider dir="$WORK/oidc-provider"
  local paths=(BENCH_TOKEN_PATH=/token BENCH_INTROSPECT_PATH=/token/introspection)
  mkdir -p "$dir"
  command -v node >/dev/null || { echo "node is required for the oidc-provider comparison" >&2; exit 1; }
  [[ -d "$ROOT/tests/browser/node_modules/oidc-provider" ]] ||
    { echo "oidc-provider is not installed: (cd tests/browser && npm ci)" >&2; exit 1; }
  wait_idle
  log "$backend: starting node bench/oidc-provider.mjs"
  node "$BENCH/oidc-provider.mjs" "$PORT" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  local ready=0
  for _ in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/.well-known/openid-configuration")" == 200 ]]; then ready=1; break; fi
    sleep 0.2
  done
  ((ready == 1)) || { log "oidc-provider did not start; its log:"; cat "$dir/server.log" >&2; exit 1; }
  local rss_ready
  rss_ready="$(proc_status VmRSS)"

  warmup "$backend" client_credentials "${paths[@]}"
  measure "$backend" client_credentials "client-credentials grant" "${paths[@]}"
  python3 "$BENCH/prepare.py" cc-token "$BASE" "$SERVICE_BASIC" /token >"$dir/access_token"
  warmup "$backend" introspect BENCH_TOKEN_FILE="$dir/access_token" "${paths[@]}"
  measure "$backend" introspect "introspection" BENCH_TOKEN_FILE="$dir/access_token" "${paths[@]}"
  mint_tokens "$backend" warm "$WARMUP" "${paths[@]}"
  warmup "$backend" introspect_once BENCH_TOKENS_FILE="$dir/warm.tokens" "${paths[@]}"
  mint_tokens "$backend" measured "$((DURATION * 2))" "${paths[@]}"
  log "$backend: minted $MINTED access tokens"
  measure "$backend" introspect_once "introspection, first time (each token once)" \
    BENCH_TOKENS_FILE="$dir/measured.tokens" "${paths[@]}"

  local hwm rss
  hwm="$(proc_status VmHWM)"
  rss="$(proc_status VmRSS)"
  printf '| %s | **peak RSS (VmHWM) %s MiB**; RSS when ready %s MiB, after the runs %s MiB | | | | | | |\n' \
    "$backend" "$(mib "$hwm")" "$(mib "$rss_ready")" "$(mib "$rss")" >>"$WORK/rows.md"
  stop_server
}

CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
log "wrk -t$THREADS -c$CONNECTIONS, warm-up ${WARMUP} s, measured ${DURATION} s; $(nproc) CPUs: $CPU_MODEL"
for backend in "${backends[@]}"; do
  case "$backend" in
    oidc-provider) run_oidc_provider ;;
    soak) run_soak ;;
    *) run_backend "$backend" ;;
  esac
done

echo
echo "wrk -t$THREADS -c$CONNECTIONS --timeout 5s, measured ${DURATION} s after a ${WARMUP} s warm-up;" \
  "$(nproc) CPUs ($CPU_MODEL); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo '| backend | scenario | requests/s | p50 ms | p99 ms | requests | errors | CPU cores: server / wrk / postgres / irq / other |'
echo '|---|---|---:|---:|---:|---:|---|---|'
cat "$WORK/rows.md"
for scenario in "client-credentials grant" "introspection" "introspection, first time (each token once)"; do
  for backend in sqlite postgres; do
    if [[ -n "${RPS["$backend $scenario"]:-}" && -n "${RPS["oidc-provider $scenario"]:-}" ]]; then
      [[ -n "${ratios:-}" ]] || { echo; echo "Gatehouse / oidc-provider, requests/s:"; echo; ratios=1; }
      awk -v g="${RPS["$backend $scenario"]}" -v o="${RPS["oidc-provider $scenario"]}" -v s="$scenario" -v b="$backend" \
        'BEGIN { printf "- %s: Gatehouse on %s %.0f / oidc-provider %.0f = %.1f×\n", s, b, g, o, g / o }'
    fi
  done
done
if [[ -s "$WORK/notes.md" ]]; then
  echo
  echo "Notes:"
  echo
  cat "$WORK/notes.md"
fi
exit "$FAILED"
