#!/usr/bin/env python3
"""Grid search of the band thresholds, from `kefu eval --messages … --dump` JSON lines.

Each line holds one customer message of the tune half with its labels, the intent rule
that claimed it (if any), the share of unknown words and its top candidates (score,
similarity, eligibility). The first reply is decided again for every setting the way
`Retriever::band` decides it, and the settings are ranked as the bundled thresholds were
chosen: the most messages answered plus right entries seen, among settings with at least
90 % of answers right and at least 90 % of out-of-scope messages falling back.

    python3 benches/embeddings/bands.py dump-tune.jsonl [--unknown-penalty 0.2]

Only ever run it on the tune half: the test half is for reporting.
"""
import argparse
import itertools
import json
import re


def labels(m):
    entries, oos, intents = set(), False, set()
    for l in m["labels"]:
        if l == "OutOfScope":
            oos = True
        elif l.startswith("Entry("):
            entries.add(re.match(r'Entry\("(.*)"\)', l).group(1))
        elif l.startswith("Intent("):
            intents.add(re.match(r'Intent\("(.*)"\)', l).group(1))
    return entries, oos, intents


def band(cands, unknown, confident, margin, uncertain, list_gap, penalty, clarify=4):
    if not cands:
        return "none", []
    top = cands[0]
    if not top["eligible"] or top["similarity"] - penalty * unknown < uncertain:
        return "none", []
    runner = next((c for c in cands[1:] if c["eligible"]), None)
    if top["similarity"] >= confident and (runner is None or top["score"] - runner["score"] >= margin):
        return "answer", [top["id"]]
    alts = []
    for c in cands[1:]:
        if not c["eligible"]:
            continue
        if c["similarity"] >= uncertain and top["score"] - c["score"] <= list_gap:
            alts.append(c["id"])
            if len(alts) >= clarify - 1:
                break
        else:
            break
    return "offer", [top["id"]] + alts


def tally(msgs, **t):
    faq = answered = right = seen = oos = oos_fb = 0
    for m in msgs:
        entries, is_oos, intents = labels(m)
        if m["intent"]:
            if entries and m["intent"] in intents:
                faq += 1; answered += 1; right += 1; seen += 1
            elif entries:
                faq += 1
            elif is_oos:
                oos += 1
            continue
        kind, ids = band(m["candidates"], m["unknown"], **t)
        if entries:
            faq += 1
            if kind == "answer":
                answered += 1
                right += ids[0] in entries
            seen += any(i in entries for i in ids)
        elif is_oos:
            oos += 1
            oos_fb += kind == "none"
    return dict(answered=answered / faq, right=right / max(answered, 1), seen=seen / faq,
                oos=oos_fb / max(oos, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--unknown-penalty", type=float, default=0.2)
    ap.add_argument("--at", help="confident,margin,uncertain,list_gap: score this setting only")
    ap.add_argument("--min-right", type=float, default=0.90,
                    help="least share of answers that must be right")
    ap.add_argument("--min-oos", type=float, default=0.90,
                    help="least share of out-of-scope messages that must fall back")
    a = ap.parse_args()
    msgs = [json.loads(l) for l in open(a.dump, encoding="utf-8")]
    if a.at:
        c, m, u, g = (float(x) for x in a.at.split(","))
        t = tally(msgs, confident=c, margin=m, uncertain=u, list_gap=g, penalty=a.unknown_penalty)
        print("answered %.1f %%, right %.1f %%, seen %.1f %%, out-of-scope fallback %.1f %%" % (
            100 * t["answered"], 100 * t["right"], 100 * t["seen"], 100 * t["oos"]))
        return
    r = lambda lo, hi, st: [round(lo + i * st, 3) for i in range(int(round((hi - lo) / st)) + 1)]
    best = None
    for confident, margin, uncertain, gap in itertools.product(
            r(0.2, 0.95, 0.01), r(0.0, 0.06, 0.0025), r(0.1, 0.9, 0.01), [0.05, 0.1, 0.2]):
        if uncertain > confident:
            continue
        t = tally(msgs, confident=confident, margin=margin, uncertain=uncertain,
                  list_gap=gap, penalty=a.unknown_penalty)
        if t["right"] < a.min_right - 1e-9 or t["oos"] < a.min_oos - 1e-9:
            continue
        key = t["answered"] + t["seen"]
        if best is None or key > best[0] + 1e-9:
            best = (key, dict(confident=confident, margin=margin, uncertain=uncertain, list_gap=gap), t)
    if best is None:
        print("no setting reaches the floors for right answers and out-of-scope fallback")
        return
    print("chosen", best[1])
    print("tune half: answered %.1f %%, right %.1f %%, seen %.1f %%, out-of-scope fallback %.1f %%" % (
        100 * best[2]["answered"], 100 * best[2]["right"], 100 * best[2]["seen"], 100 * best[2]["oos"]))


if __name__ == "__main__":
    main()
