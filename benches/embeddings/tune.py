#!/usr/bin/env python3
"""Coordinate ascent on the ranking weights, from `kefu eval --dump` JSON lines.

Each line holds one labelled query's re-ranked candidates with their features and which
one is the gold entry. A candidate's score is the weighted mean of its features, so any
weights can be scored again without running kefu. Tune on one fold's dump, then report
the other fold's with the chosen weights:

    python3 benches/embeddings/tune.py --tune dump-0.jsonl --report dump-1.jsonl

Prints the starting and the chosen weights with MRR@10 and recall@1/10 on both files.
"""
import argparse
import json

NAMES = ["bm25", "grams", "unigrams", "gram_idf", "length", "words", "edit",
         "query_cover", "candidate_cover", "keyword", "cosine"]


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            feats = [[c["features"][n] for n in NAMES] for c in q["candidates"]]
            gold = [i for i, c in enumerate(q["candidates"]) if c["gold"]]
            rows.append((feats, gold[0] if gold else None))
    return rows


def metrics(rows, w):
    mrr = r1 = r10 = 0.0
    for feats, gold in rows:
        if gold is None:
            continue
        g = sum(a * b for a, b in zip(feats[gold], w))
        # Rank = 1 + candidates scoring strictly higher (ties resolved in gold's favour
        # half the time would be fairer; strict keeps it conservative and simple).
        rank = 1 + sum(1 for f in feats if sum(a * b for a, b in zip(f, w)) > g)
        if rank <= 10:
            mrr += 1.0 / rank
            r10 += 1
        if rank == 1:
            r1 += 1
    n = len(rows)
    return mrr / n, r1 / n, r10 / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--start", default="", help="name=value,... (default: kefu's ranking weights, cosine 0)")
    ap.add_argument("--fix", default="", help="comma-separated features kept at their start value")
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    tune, report = load(a.tune), load(a.report)
    w = dict(bm25=0.27, grams=0.0, unigrams=0.27, gram_idf=0.0, length=0.03, words=0.01,
             edit=0.33, query_cover=0.07, candidate_cover=0.01, keyword=0.05, cosine=0.0)
    for kv in filter(None, a.start.split(",")):
        k, v = kv.split("=")
        w[k] = float(v)
    fixed = set(filter(None, a.fix.split(",")))
    vec = [w[n] for n in NAMES]
    print("start   tune MRR@10 %.4f R@1 %.4f R@10 %.4f" % metrics(tune, vec),
          "| report MRR@10 %.4f R@1 %.4f R@10 %.4f" % metrics(report, vec))
    best = metrics(tune, vec)[0]
    grid = [0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5,
            2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0]
    for rnd in range(a.rounds):
        improved = False
        for i, n in enumerate(NAMES):
            if n in fixed:
                continue
            for v in grid:
                trial = vec[:]
                trial[i] = v
                m = metrics(tune, trial)[0]
                if m > best + 1e-9:
                    best, vec, improved = m, trial, True
        print("round %d tune MRR@10 %.4f" % (rnd + 1, best))
        if not improved:
            break
    print("chosen  ", ", ".join("%s=%.2f" % (n, v) for n, v in zip(NAMES, vec)))
    print("chosen  tune MRR@10 %.4f R@1 %.4f R@10 %.4f" % metrics(tune, vec),
          "| report MRR@10 %.4f R@1 %.4f R@10 %.4f" % metrics(report, vec))


if __name__ == "__main__":
    main()
