#!/usr/bin/env bash
# The first reply to the labelled customer messages, with the content of an older commit
# and with the content of the work tree, measured by the same binary in one run:
#
#   eval/compare-content.sh REV [SET] [-- extra kefu eval options]
#
# SET is one of test (default: the held-out half of eval/customer-messages.tsv), tune,
# calibration (eval/calibration-messages.tsv). Extra options are passed to both runs,
# for example `-- --config kefu.toml` to measure with embeddings. The binary is this
# tree's release build, so a change of code and content together is measured as a
# change of content only; build REV's binary yourself to compare code.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: eval/compare-content.sh REV [test|tune|calibration] [-- options]}
shift
set_name=test
if [ $# -gt 0 ] && [ "$1" != "--" ]; then set_name=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; fi
case $set_name in
  test|tune) set_args=(--messages eval/customer-messages.tsv --half "$set_name") ;;
  calibration) set_args=(--messages eval/calibration-messages.tsv) ;;
  *) echo "unknown set $set_name (test, tune or calibration)" >&2; exit 2 ;;
esac
cargo build --release --quiet
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git archive "$rev" knowledge-base intents | tar -x -C "$old"
for side in before after; do
  if [ $side = before ]; then kb=(--kb "$old/knowledge-base" --intents "$old/intents"); else kb=(--kb knowledge-base --intents intents); fi
  echo "== $set_name, $side ($([ $side = before ] && echo "content of $rev" || echo "work tree"))"
  ./target/release/kefu eval "${set_args[@]}" --today 2026-11-30 "${kb[@]}" "$@"
done
