#!/usr/bin/env python3
"""Proposes `knowledge-base/overlaps.txt` from labelled customer messages.

Two entries overlap when their answers both answer many of the same questions; the
labels of the tuning sets say so directly, since a message lists every entry that
answers it (`eval/README.md`, label rules). A pair labelled together on at least
--min messages is proposed. Only `tune` rows are read, so the `test` half of
`customer-messages.tsv` stays held out; pass only sets whose misses content was
already written from, so that a fresh blind set can still measure the result.

    eval/overlaps-from-labels.py --min 3 eval/customer-messages.tsv \\
        eval/calibration-messages.tsv eval/blind{3..34}-messages.tsv > overlaps.txt

Ids that no entry of knowledge-base/ has any more are left out (entries are read
from its .toml files only; `kefu kb check` then checks every id against all entries). Review the output
before it replaces the file: a pair belongs there only if answering the question with
either entry would serve the customer.
"""
import argparse
import collections
import itertools
import pathlib
import re
import sys

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--min", type=int, default=3, help="messages a pair must share")
ap.add_argument("--kb", default="knowledge-base", help="the knowledge-base directory")
ap.add_argument("sets", nargs="+", help="labelled message files (TSV)")
args = ap.parse_args()

ids = set()
for f in pathlib.Path(args.kb).iterdir():
    if f.suffix == ".toml":
        ids.update(re.findall(r'^id = "([^"]+)"', f.read_text(encoding="utf-8"), re.M))

together = collections.Counter()
for name in args.sets:
    rows = pathlib.Path(name).read_text(encoding="utf-8").splitlines()[1:]
    for row in rows:
        cols = row.split("\t")
        if len(cols) < 5 or cols[4] != "tune":
            continue
        labels = sorted({l for l in cols[2].split("|") if l in ids})
        for pair in itertools.combinations(labels, 2):
            together[pair] += 1

out = sys.stdout
out.write("# 答案常常同时答得上同一个问题的条目：每行两个条目 id，用空格隔开。\n")
out.write("# 两个条目排在最前、分数相近时，客户直接得到第一个的答案，而不是被反问“您是不是想问”：\n")
out.write("# 两个答案都对，反问只会让客户多回一句。只放真的两个都答得上的条目。\n")
out.write("# 由 eval/overlaps-from-labels.py 从调优集的标注生成（同一条消息标了两个条目，至少 %d 条），人工看过。\n" % args.min)
for (a, b), n in sorted(together.items()):
    if n >= args.min:
        out.write(f"{a} {b}\n")
