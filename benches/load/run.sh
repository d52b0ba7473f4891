#!/usr/bin/env bash
# Load bench: the same workload in-process (`cargo bench --bench load`) and over HTTP
# against `kefu serve` on 127.0.0.1 with wrk, measured in one run, plus a knowledge-base
# publish in the middle of the HTTP load (every request must still succeed).
#
#   benches/load/run.sh [SECONDS] [CONNECTIONS]      (defaults: 20 s, 64 connections)
#
# Needs wrk (Debian package `wrk`). Sends traffic to 127.0.0.1 only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
conns=${2:-64}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
server=""
trap 'if [ -n "$server" ]; then kill $server 2>/dev/null || true; fi; rm -rf "$work"' EXIT

admin_token="bench-admin-token-0123456789"
hash=$(printf '%s' "$admin_token" | ./target/release/kefu hash-token)
cat > "$work/kefu.toml" <<TOML
[server]
# The bench customers write faster than people do; the limiter is not what is measured.
customer_messages_per_minute = 100000
customer_burst = 1000
[admin]
token_sha256 = "$hash"
TOML

echo "== in-process baseline ($secs s, $conns threads)"
KEFU_LOAD_SECS=$secs KEFU_LOAD_CONCURRENCY=$conns cargo bench --quiet --bench load | grep '^{' || true

KEFU_LOG=warn ./target/release/kefu serve --listen 127.0.0.1:0 --data "$work/store" \
  --config "$work/kefu.toml" > "$work/out" 2> "$work/err" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/out")

# The publish body: every bundled file, as the admin API takes them.
python3 - "$work/publish.json" <<'PY'
import json, pathlib, sys
files = []
for folder in ("knowledge-base", "intents"):
    for p in sorted(pathlib.Path(folder).iterdir()):
        if p.is_file():
            files.append({"name": f"{folder}/{p.name}", "content": p.read_text(encoding="utf-8")})
# A changed file, so the publish really swaps in a new version.
files[0]["content"] += "\n"
json.dump({"files": files}, open(sys.argv[1], "w"), ensure_ascii=False)
PY

echo "== HTTP: wrk -t2 -c$conns -d${secs}s against kefu serve ($url), publish at $((secs / 2)) s"
(sleep $((secs / 2)); curl -s -o "$work/publish.out" -w '%{http_code}' -H "Authorization: Bearer $admin_token" \
   -H 'Content-Type: application/json' --data-binary @"$work/publish.json" "$url/v1/admin/kb/publish" > "$work/publish.code") &
publisher=$!
QUESTIONS_FILE=eval/bundled-queries.tsv wrk -t2 -c"$conns" -d"${secs}s" --latency \
  -s benches/load/messages.lua "$url" | tee "$work/wrk"
wait "$publisher"
echo "== publish mid-load: HTTP $(cat "$work/publish.code"), version $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["version"])' "$work/publish.out")"
grep -q "Non-2xx" "$work/wrk" && echo "!! some requests failed" || echo "== all requests succeeded (no non-2xx responses, no socket errors: see above)"
