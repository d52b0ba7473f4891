#!/usr/bin/env bash
# Load bench for replicas: the same HTTP workload as run.sh against one `kefu serve` on
# the embedded sled store, then one replica on PostgreSQL, then two replicas sharing that
# database (the load split between them), all in one run on this machine.
#
#   benches/load/replicas.sh [SECONDS] [CONNECTIONS]     (defaults: 20 s, 64 connections)
#
# Needs wrk and Debian's postgresql (a private server is initialised in a temp dir, on a
# free 127.0.0.1 port, with durable commits: fsync stays on). Loopback traffic only.
set -euo pipefail
keep=${KEEP:-}
cd "$(dirname "$0")/../.."
secs=${1:-20}
conns=${2:-64}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "install postgresql (apt-get install postgresql)" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -d "$work/pg" ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1 || true
  fi
  [ -n "$keep" ] || rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/pg" && chown postgres "$work/pg"
runuser -u postgres -- "$bin/initdb" -U kefu --auth=trust -E UTF8 --no-locale -D "$work/pg/data" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$bin/pg_ctl" -w -D "$work/pg/data" -l "$work/pg/log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work/pg -c max_connections=300" start >/dev/null
url="postgres://kefu@127.0.0.1:$port/postgres"

start() { # name, extra config
  mkdir -p "$work/$1"
  printf '[server]\ncustomer_messages_per_minute = 100000\ncustomer_burst = 1000\n%s\n' "$2" > "$work/$1/kefu.toml"
  KEFU_LOG=warn ./target/release/kefu serve --listen 127.0.0.1:0 --data "$work/$1/store" \
    --config "$work/$1/kefu.toml" > "$work/$1/out" 2> "$work/$1/err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$work/$1/out" 2>/dev/null && break; sleep 0.1; done
  started_url=$(sed -n 's/^listening on //p' "$work/$1/out")
}
load() { # label, then one URL per replica: the connections are split between them
  local label=$1; shift
  # Two wrk threads in all, whatever the number of replicas: the client's share of the
  # 2 cores stays the same in every row.
  local n=$# each=$((conns / $#)) threads=$((2 / $#)) i=0 wp=()
  [ "$threads" -ge 1 ] || threads=1
  for u in "$@"; do
    QUESTIONS_FILE=eval/bundled-queries.tsv wrk -t"$threads" -c"$each" -d"${secs}s" --latency \
      -s benches/load/messages.lua "$u" > "$work/wrk.$label.$i" &
    wp+=($!)
    i=$((i + 1))
  done
  wait "${wp[@]}"
  python3 - "$label" "$work" "$n" <<'PY'
import re, sys
label, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rps = 0.0; p50 = []; p99 = []; bad = 0
def ms(v):
    num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(num) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
for i in range(n):
    t = open(f"{work}/wrk.{label}.{i}").read()
    rps += float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50.append(ms(re.search(r"50%\s+(\S+)", t).group(1)))
    p99.append(ms(re.search(r"99%\s+(\S+)", t).group(1)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t); bad += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", t); bad += sum(int(x) for x in re.findall(r"\d+", m.group(1))) if m else 0
print(f"| {label} | {rps:,.0f} | {max(p50):.1f} ms | {max(p99):.1f} ms | {bad} |")
PY
}

echo "| $conns connections, ${secs} s | messages/s | p50 (worst replica) | p99 (worst replica) | failed |"
echo "|---|---|---|---|---|"
start sled ""
load "sled, one process" "$started_url"
kill "${pids[-1]}"; unset 'pids[-1]'
start pg-a "[store]
url = \"$url\""
a=$started_url
load "PostgreSQL, one replica" "$a"
start pg-b "[store]
url = \"$url\""
load "PostgreSQL, two replicas" "$a" "$started_url"
