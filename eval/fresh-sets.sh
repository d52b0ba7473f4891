#!/usr/bin/env bash
# A code change measured on blind messages that the content had not been tuned on:
#
#   eval/fresh-sets.sh [BIN] [-- extra kefu eval options]
#
# Every blind set (blind3 … the newest) is run with the knowledge base and intents of the
# commit that added it: the content as it stood before anyone wrote entries or intents from
# that set's misses. The tuning sets run on today's content are fitted to it (their
# misses were read and fixed), so a change to ranking or bands that only looks at them
# cannot tell a general gain from one the content already covers. Here each set is as
# fresh as it was on its one measurement. The code's own thresholds were chosen on some
# of these sets in later rounds, so this is a check for code changes, not a held-out
# figure: the held-out figures stay the test half and the newest blind set.
#
# The newest blind set is left out: until its round ends it is the held-out check set,
# measured once by the lead (FRESH_NEWEST=1 includes it, for that one measurement).
#
# BIN defaults to this tree's release build. Prints one line per set and the totals, in
# the order answered / right / seen / out-of-scope fallback, with the counts behind them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-./target/release/kefu}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
if [ "$bin" = ./target/release/kefu ]; then cargo build --release --quiet; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sets=$(ls eval/blind*-messages.tsv | sed -E 's/.*blind([0-9]+)-.*/\1/' | sort -n)
if [ "${FRESH_NEWEST:-0}" != 1 ]; then sets=$(echo "$sets" | sed '$d'); fi
for n in $sets; do
  file=eval/blind$n-messages.tsv
  rev=$(git log --diff-filter=A --format=%h -- "$file" | tail -1)
  [ -n "$rev" ] || { echo "blind$n: not committed yet, skipped" >&2; continue; }
  mkdir -p "$work/$n"
  git archive "$rev" knowledge-base intents | tar -x -C "$work/$n"
  # Round 45's loader rejects a similar question about a product its entry's standard
  # question does not name (`KnowledgeBase::unreachable_questions`); contents older than
  # 87ec661 hold three. Give every copy that commit's fix: two standard questions that name
  # every loan they answer (the old ones stay as similar questions) and one reworded
  # question. No entry gains or loses a wording a message could match.
  python3 - "$work/$n/knowledge-base" <<'PY'
import sys
kb = sys.argv[1]
fixes = {
    "loans.toml": [
        ('question = "房贷晚还一天要紧吗"\nsimilar = [', 'question = "贷款晚还一天要紧吗"\nsimilar = ["房贷晚还一天要紧吗", '),
        ('question = "消费贷可以提前还吗"\nsimilar = [', 'question = "消费贷、车贷可以提前还吗"\nsimilar = ["消费贷可以提前还吗", '),
    ],
    "repayment.toml": [('"分期月供太高想降下来"', '"分期每个月还得太多想降下来"')],
}
for name, pairs in fixes.items():
    path = "%s/%s" % (kb, name)
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        continue
    for old, new in pairs:
        text = text.replace(old, new, 1)
    open(path, "w", encoding="utf-8").write(text)
PY
  "$bin" eval --messages "$file" --today 2026-11-30 --json \
    --kb "$work/$n/knowledge-base" --intents "$work/$n/intents" "$@" > "$work/$n.json"
  echo "blind$n $rev"
done | python3 -c '
import json, sys
work = sys.argv[1]
tot = {}
def line(name, c):
    s = lambda a, b: 100.0 * a / b if b else 0.0
    return ("%-8s %5.1f / %5.1f / %5.1f / %5.1f %%   (%d of %d FAQ answered, %d right, %d seen; %d of %d out of scope fall back)"
            % (name, s(c["answered"], c["faq"]), s(c["answered_right"], c["answered"]), s(c["seen_right"], c["faq"]),
               s(c["out_of_scope_fallback"], c["out_of_scope"]), c["answered"], c["faq"], c["answered_right"],
               c["seen_right"], c["out_of_scope_fallback"], c["out_of_scope"]))
for row in sys.stdin:
    name, rev = row.split()
    c = json.load(open("%s/%s.json" % (work, name[5:])))["counts"]
    for k, v in c.items():
        tot[k] = tot.get(k, 0) + v
    print(line(name, c) + "  content of " + rev)
print(line("all", tot))
' "$work"
