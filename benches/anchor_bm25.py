#!/usr/bin/env python3
"""The reference baseline of shared/data/bq/README.md, reproduced so kefu can be
compared with it on the same machine in the same run: jieba 0.42.1 + rank_bm25 0.2.2
BM25Okapi (k1=1.5, b=0.75), each standard and similar question its own document, an
entry scored by its best question, one thread, search and ranking time only.

    python3 -m venv /tmp/anchor && /tmp/anchor/bin/pip install jieba==0.42.1 rank_bm25==0.2.2
    /tmp/anchor/bin/python benches/anchor_bm25.py [../shared/data/bq]

Prints one JSON object with the keys `kefu eval --json` uses. Exits 0 with a notice
when the data set is absent (it is internal and never copied into this repository).
"""
import csv
import json
import os
import sys
import time


def main() -> int:
    data = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "bq")
    faq_path, queries_path = os.path.join(data, "faq.tsv"), os.path.join(data, "queries.tsv")
    if not (os.path.isfile(faq_path) and os.path.isfile(queries_path)):
        print(f"anchor: no data set at {data}; skipped", file=sys.stderr)
        return 0
    import jieba
    from rank_bm25 import BM25Okapi

    jieba.setLogLevel(60)

    def tokens(text: str) -> list:
        return [t for t in jieba.lcut(text) if t.strip()]

    def rows(path: str) -> list:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

    doc_entry, docs, entries = [], [], set()
    for row in rows(faq_path):
        entries.add(row["id"])
        for q in [row["question"]] + [s for s in (row["similar"] or "").split("|") if s]:
            doc_entry.append(row["id"])
            docs.append(tokens(q))
    bm25 = BM25Okapi(docs, k1=1.5, b=0.75)
    queries = rows(queries_path)
    tokenized = [tokens(q["query"]) for q in queries]

    hits = {1: 0, 3: 0, 10: 0}
    mrr = 0.0
    started = time.perf_counter()
    for q, toks in zip(queries, tokenized):
        scores = bm25.get_scores(toks)
        best = {}
        for i in scores.argsort()[::-1][:300]:
            e = doc_entry[i]
            if e not in best:
                best[e] = scores[i]
            if len(best) >= 10:
                break
        ranked = sorted(best, key=lambda e: -best[e])[:10]
        if q["gold_id"] in ranked:
            r = ranked.index(q["gold_id"])
            for k in hits:
                hits[k] += r < k
            mrr += 1.0 / (r + 1)
    elapsed = time.perf_counter() - started
    n = len(queries)
    print(json.dumps({
        "entries": len(entries),
        "queries": n,
        "recall@1": hits[1] / n,
        "recall@3": hits[3] / n,
        "recall@10": hits[10] / n,
        "mrr@10": mrr / n,
        "queries_per_second": n / elapsed,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
