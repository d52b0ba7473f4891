//! Reports for the content team, read from the store's analytics events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::knowledge::KnowledgeBase;
use crate::retrieval::{text_features, Band, Idf, Prepared, Weights};
use crate::store::{Event, EventKind};
use crate::text::{search_form, Analyzer};

/// Questions the bot could not answer with confidence, grouped by wording.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnansweredGroup {
    /// The most frequent wording of the group.
    pub question: String,
    pub count: usize,
    /// Other wordings, most frequent first.
    pub variants: Vec<String>,
    /// How many got no match at all (the rest were asked back).
    pub no_match: usize,
    /// The entry most often offered as best candidate, if any.
    pub nearest_entry: Option<String>,
}

/// Questions whose similarity reaches this join one group: loose enough for
/// "信用卡怎么注销" ~ "怎么注销信用卡", tight enough to keep topics apart.
const GROUP_SIMILARITY: f32 = 0.55;

/// Groups unanswered and asked-back questions, most frequent group first.
pub fn unanswered(events: &[Event], analyzer: &Analyzer) -> Vec<UnansweredGroup> {
    // Identical wordings first, counted.
    // Identical wordings are counted in a map: an event log holds many repeats.
    let mut by_text: HashMap<&str, (usize, usize, Option<String>)> = HashMap::new();
    for e in events {
        let EventKind::Question {
            text, band, top, ..
        } = &e.kind
        else {
            continue;
        };
        if *band == Band::Confident {
            continue;
        }
        let nearest = top.first().map(|(id, _)| id.clone());
        let slot = by_text.entry(text.as_str()).or_insert((0, 0, nearest));
        slot.0 += 1;
        slot.1 += usize::from(*band == Band::NoMatch);
    }
    let mut counts: Vec<(String, usize, usize, Option<String>)> = by_text
        .into_iter()
        .map(|(text, (count, no_match, nearest))| (text.to_owned(), count, no_match, nearest))
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let prepared: Vec<Prepared> = counts
        .iter()
        .map(|c| Prepared::new(analyzer, &c.0))
        .collect();
    let idf = Idf::from_docs(prepared.iter().map(|p| p.words()));
    let weights = Weights::default();
    let mut groups: Vec<(usize, UnansweredGroup)> = Vec::new();
    for (i, (text, count, no_match, nearest)) in counts.into_iter().enumerate() {
        let home = groups.iter_mut().find(|(rep, _)| {
            let a = text_features(&prepared[i], &prepared[*rep], &idf).similarity(&weights);
            let b = text_features(&prepared[*rep], &prepared[i], &idf).similarity(&weights);
            (a + b) / 2.0 >= GROUP_SIMILARITY
        });
        match home {
            Some((_, g)) => {
                g.count += count;
                g.no_match += no_match;
                g.variants.push(text);
            }
            None => groups.push((
                i,
                UnansweredGroup {
                    question: text,
                    count,
                    variants: Vec::new(),
                    no_match,
                    nearest_entry: nearest,
                },
            )),
        }
    }
    let mut out: Vec<UnansweredGroup> = groups.into_iter().map(|(_, g)| g).collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.question.cmp(&b.question)));
    out
}

/// A customer wording the content team may add as a similar question, with the
/// signals behind it (QnA Maker's active learning, shown rather than applied).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    /// Number for `kefu report accept N`, 1-based, in the order shown.
    pub number: usize,
    /// The customer's wording (masked as stored).
    pub question: String,
    /// The entry it should become a similar question of: the entry customers picked
    /// from the list after asking it, else the nearest candidate of an unanswered one.
    pub entry: Option<String>,
    /// Times customers asked it, were asked back, and picked `entry` from the list.
    pub picks: usize,
    /// Times it got no match.
    pub unanswered: usize,
    /// Times it was answered and the customer said the answer did not help, with the
    /// entry that gave that answer (a wording that entry should *not* answer).
    pub unhelpful: usize,
    pub unhelpful_entry: Option<String>,
}

#[derive(Default)]
struct Signals {
    picks: HashMap<String, usize>,
    unanswered: usize,
    nearest: Option<String>,
    unhelpful: HashMap<String, usize>,
}

/// The entry with the highest count (ties: smallest id, so output is stable).
fn most(counts: &HashMap<String, usize>) -> Option<(String, usize)> {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(k, v)| (k.clone(), *v))
}

/// Suggestions from the three signals in the event log: a pick from a "您是不是想问"
/// list right after the question (or of a close runner-up numbered under an answer), a
/// 没用 right after an answer, and a question with no match. A wording that already is
/// a question of its target entry is left out, so an accepted suggestion disappears
/// from the next report.
pub fn suggestions(events: &[Event], kb: &KnowledgeBase) -> Vec<Suggestion> {
    // Events are stored in commit order; one customer's events stay in order when
    // grouped by customer.
    let mut by_user: HashMap<(&str, &str), Vec<&Event>> = HashMap::new();
    for e in events {
        by_user
            .entry((e.tenant.as_str(), e.user.as_str()))
            .or_default()
            .push(e);
    }
    let mut signals: HashMap<String, Signals> = HashMap::new();
    for evs in by_user.values() {
        for (i, e) in evs.iter().enumerate() {
            let EventKind::Question {
                text,
                band,
                top,
                answered,
                near,
            } = &e.kind
            else {
                continue;
            };
            let next = evs[i + 1..]
                .iter()
                .find(|n| !matches!(n.kind, EventKind::Intent { .. }));
            let s = signals.entry(text.clone()).or_default();
            match band {
                Band::Uncertain => {
                    if let Some(EventKind::MenuPick {
                        entry: Some(picked),
                        ..
                    }) = next.map(|n| &n.kind)
                    {
                        *s.picks.entry(picked.clone()).or_default() += 1;
                    }
                }
                Band::NoMatch => {
                    s.unanswered += 1;
                    if s.nearest.is_none() {
                        s.nearest = top.first().map(|(id, _)| id.clone());
                    }
                }
                Band::Confident => {
                    // A close runner-up picked right after the answer: the customer
                    // meant it, as with a pick from a list. An editor's related
                    // question picked there is a follow-up, not a correction.
                    if let Some(EventKind::MenuPick {
                        entry: Some(picked),
                        ..
                    }) = next.map(|n| &n.kind)
                    {
                        if near.contains(picked) {
                            *s.picks.entry(picked.clone()).or_default() += 1;
                        }
                    }
                    if let (
                        Some(EventKind::Feedback {
                            entry,
                            positive: false,
                        }),
                        Some(answered),
                    ) = (next.map(|n| &n.kind), answered)
                    {
                        if entry == answered {
                            *s.unhelpful.entry(entry.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<Suggestion> = signals
        .into_iter()
        .filter_map(|(question, s)| {
            let (picked, picks) = most(&s.picks).map_or((None, 0), |(e, n)| (Some(e), n));
            let unhelpful = most(&s.unhelpful);
            if picks == 0 && s.unanswered == 0 && unhelpful.is_none() {
                return None;
            }
            let entry = picked.or(s.nearest);
            let key = search_form(&question);
            let known = entry
                .as_deref()
                .and_then(|id| kb.index_of(id))
                .is_some_and(|i| kb.entries()[i].questions().any(|q| search_form(q) == key));
            (!known).then(|| Suggestion {
                number: 0,
                question,
                entry,
                picks,
                unanswered: s.unanswered,
                unhelpful: unhelpful.as_ref().map_or(0, |u| u.1),
                unhelpful_entry: unhelpful.map(|u| u.0),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.picks + b.unanswered + b.unhelpful)
            .cmp(&(a.picks + a.unanswered + a.unhelpful))
            .then(b.picks.cmp(&a.picks))
            .then(a.question.cmp(&b.question))
    });
    for (i, s) in out.iter_mut().enumerate() {
        s.number = i + 1;
    }
    out
}

/// Appends `question` to the `similar` list of entry `id` in its TOML file, keeping the
/// file's formatting, then loads the whole directory again; if that fails, the file is
/// restored and the errors are returned. Spreadsheet files (CSV/TSV) are not edited:
/// an editor's spreadsheet program owns their formatting.
pub fn accept_similar(kb_dir: &Path, id: &str, question: &str) -> Result<PathBuf> {
    let kb = KnowledgeBase::load_dir(kb_dir)?;
    let entry = kb
        .index_of(id)
        .and_then(|i| kb.get(i))
        .ok_or_else(|| Error::InvalidInput(format!("no entry \"{id}\" in {}", kb_dir.display())))?;
    let key = search_form(question);
    if key.is_empty() {
        return Err(Error::InvalidInput(
            "the suggested question is empty".into(),
        ));
    }
    if entry.questions().any(|q| search_form(q) == key) {
        return Err(Error::InvalidInput(format!(
            "entry \"{id}\" already has the question \"{question}\""
        )));
    }
    let path = entry.location.file.clone();
    if path.extension().and_then(|e| e.to_str()) != Some("toml") {
        return Err(Error::InvalidInput(format!(
            "entry \"{id}\" lives in {}, a spreadsheet: add \"{question}\" to its similar column there",
            path.display()
        )));
    }
    let original = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let edited = insert_similar(&original, entry.location.line, question).ok_or_else(|| {
        Error::InvalidInput(format!(
            "could not find the [[entry]] of \"{id}\" at {}:{}",
            path.display(),
            entry.location.line
        ))
    })?;
    std::fs::write(&path, &edited).map_err(|e| Error::io(&path, e))?;
    if let Err(e) = KnowledgeBase::load_dir(kb_dir) {
        std::fs::write(&path, &original).map_err(|e| Error::io(&path, e))?;
        return Err(e);
    }
    Ok(path)
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text with `question` appended to the `similar` array of the `[[entry]]` table
/// that contains line `line` (1-based); a missing `similar` key is added after the
/// `question` line. `None` if the table is not where the location says.
fn insert_similar(text: &str, line: usize, question: &str) -> Option<String> {
    let item = toml_string(question);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let offset_of = |l: usize| lines[..l].iter().map(|s| s.len()).sum::<usize>();
    let idx = line.checked_sub(1).filter(|&i| i < lines.len())?;
    let start = (0..=idx).rev().find(|&i| lines[i].trim() == "[[entry]]")?;
    let end = (idx + 1..lines.len())
        .find(|&i| lines[i].trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let key_line = |key: &str| {
        (start..end).find(|&i| {
            let t = lines[i].trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    if let Some(l) = key_line("similar") {
        // Find the array's closing bracket, skipping brackets inside strings.
        let from = offset_of(l) + lines[l].find('[')?;
        let (mut in_str, mut escaped) = (false, false);
        let mut close = None;
        for (i, c) in text[from + 1..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_str => escaped = true,
                '"' => in_str = !in_str,
                ']' if !in_str => {
                    close = Some(from + 1 + i);
                    break;
                }
                _ => {}
            }
        }
        let close = close?;
        let body = &text[from + 1..close];
        let last = body.trim_end();
        let multiline = body[last.len()..].contains('\n');
        let needs_comma = !last.trim().is_empty() && !last.ends_with(',');
        let mut out = String::with_capacity(text.len() + item.len() + 8);
        out.push_str(&text[..from + 1 + last.len()]);
        if multiline {
            let indent: String = body
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.chars().take_while(|c| c.is_whitespace()).collect())
                .unwrap_or_else(|| "    ".into());
            if needs_comma {
                out.push(',');
            }
            out.push('\n');
            out.push_str(&indent);
            out.push_str(&item);
            out.push(',');
            out.push_str(&body[last.len()..]);
        } else {
            if needs_comma {
                out.push_str(", ");
            }
            out.push_str(&item);
            out.push_str(&body[last.len()..]);
        }
        out.push_str(&text[close..]);
        Some(out)
    } else {
        let q = key_line("question")?;
        // A multi-line question ("""…""") has its key line first; insert after the id
        // line instead, which is always one line.
        let after = if lines[q].contains("\"\"\"") {
            key_line("id")?
        } else {
            q
        };
        let at = offset_of(after + 1);
        let mut out = String::with_capacity(text.len() + item.len() + 16);
        out.push_str(&text[..at]);
        if !text[..at].ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("similar = [{item}]\n"));
        out.push_str(&text[at..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str, band: Band) -> Event {
        Event {
            at: 0,
            tenant: "t".into(),
            user: "u".into(),
            kind: EventKind::Question {
                text: text.into(),
                band,
                top: vec![],
                answered: None,
                near: vec![],
            },
        }
    }

    #[test]
    fn groups_similar_wordings_most_frequent_first() {
        let events = vec![
            q("数字人民币钱包怎么开通", Band::NoMatch),
            q("数字人民币钱包怎么开", Band::NoMatch),
            q("数字人民币钱包怎么开通", Band::Uncertain),
            q("养老金账户在哪里办", Band::NoMatch),
            q("银行卡丢了怎么办", Band::Confident),
        ];
        let groups = unanswered(&events, &Analyzer::default());
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].question, "数字人民币钱包怎么开通");
        assert_eq!(groups[0].count, 3);
        assert_eq!(groups[0].no_match, 2);
        assert_eq!(groups[0].variants, vec!["数字人民币钱包怎么开"]);
        assert_eq!(groups[1].count, 1);
    }

    fn ev(user: &str, kind: EventKind) -> Event {
        Event {
            at: 0,
            tenant: "t".into(),
            user: user.into(),
            kind,
        }
    }

    fn asked(text: &str, band: Band, top: &str, answered: Option<&str>) -> EventKind {
        EventKind::Question {
            text: text.into(),
            band,
            top: vec![(top.into(), 0.5)],
            answered: answered.map(str::to_owned),
            near: vec![],
        }
    }

    const KB: &str = r#"[[entry]]
id = "lost"
question = "银行卡丢了怎么办"
similar = ["卡丢了怎么挂失"]
answer = "挂失。"

[[entry]]
id = "pwd"
question = "忘记密码怎么办"
answer = "重置。"
"#;

    fn kb_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), KB).unwrap();
        dir
    }

    #[test]
    fn picks_unanswered_and_unhelpful_become_numbered_suggestions() {
        let dir = kb_dir();
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let events = vec![
            ev("a", asked("卡没了咋整", Band::Uncertain, "pwd", None)),
            ev("b", asked("卡没了咋整", Band::Uncertain, "pwd", None)),
            ev(
                "a",
                EventKind::MenuPick {
                    number: 2,
                    entry: Some("lost".into()),
                },
            ),
            ev(
                "b",
                EventKind::MenuPick {
                    number: 1,
                    entry: Some("lost".into()),
                },
            ),
            ev("c", asked("外币怎么换", Band::NoMatch, "pwd", None)),
            ev(
                "d",
                asked("密码锁了", Band::Confident, "lost", Some("lost")),
            ),
            ev(
                "d",
                EventKind::Intent {
                    name: "unsatisfied".into(),
                },
            ),
            ev(
                "d",
                EventKind::Feedback {
                    entry: "lost".into(),
                    positive: false,
                },
            ),
            // A pick after a welcome menu is no signal; a known wording is no suggestion.
            ev(
                "e",
                EventKind::MenuPick {
                    number: 1,
                    entry: Some("pwd".into()),
                },
            ),
            ev("f", asked("卡丢了怎么挂失", Band::Uncertain, "lost", None)),
            ev(
                "f",
                EventKind::MenuPick {
                    number: 1,
                    entry: Some("lost".into()),
                },
            ),
        ];
        let s = suggestions(&events, &kb);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!((s[0].number, s[0].question.as_str()), (1, "卡没了咋整"));
        assert_eq!((s[0].entry.as_deref(), s[0].picks), (Some("lost"), 2));
        let unanswered = s.iter().find(|x| x.question == "外币怎么换").unwrap();
        assert_eq!(
            (unanswered.unanswered, unanswered.entry.as_deref()),
            (1, Some("pwd"))
        );
        let unhelpful = s.iter().find(|x| x.question == "密码锁了").unwrap();
        assert_eq!(unhelpful.unhelpful, 1);
        assert_eq!(unhelpful.unhelpful_entry.as_deref(), Some("lost"));
    }

    #[test]
    fn a_close_runner_up_picked_after_an_answer_is_a_pick_and_a_related_one_is_not() {
        let dir = kb_dir();
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        let answered_with = |near: &[&str]| EventKind::Question {
            text: "密码卡都没了".into(),
            band: Band::Confident,
            top: vec![("pwd".into(), 0.7), ("lost".into(), 0.6)],
            answered: Some("pwd".into()),
            near: near.iter().map(|s| s.to_string()).collect(),
        };
        let pick = |entry: &str| EventKind::MenuPick {
            number: 1,
            entry: Some(entry.into()),
        };
        // "lost" shown as the answer's close runner-up and picked: the customer meant it.
        let s = suggestions(
            &[ev("a", answered_with(&["lost"])), ev("a", pick("lost"))],
            &kb,
        );
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].entry.as_deref(), s[0].picks), (Some("lost"), 1));
        // The same entry picked as an editor's related question is a follow-up.
        let s = suggestions(&[ev("b", answered_with(&[])), ev("b", pick("lost"))], &kb);
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn accepting_appends_to_similar_keeps_formatting_and_validates() {
        let dir = kb_dir();
        let path = accept_similar(dir.path(), "lost", "卡没了咋整").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("similar = [\"卡丢了怎么挂失\", \"卡没了咋整\"]\n"),
            "{text}"
        );
        // No similar key yet: one is added under the question.
        accept_similar(dir.path(), "pwd", "密码想不起来了").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("question = \"忘记密码怎么办\"\nsimilar = [\"密码想不起来了\"]\n"),
            "{text}"
        );
        let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
        assert_eq!(kb.entries()[0].similar.len(), 2);
        // The same wording twice, or an unknown entry, is refused and changes nothing.
        assert!(accept_similar(dir.path(), "lost", "卡没了咋整！").is_err());
        assert!(accept_similar(dir.path(), "nope", "随便").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn multi_line_arrays_get_one_item_per_line() {
        let text = "[[entry]]\nid = \"x\"\nsimilar = [\n    \"a\",\n    \"b\"\n]\nanswer = \"y\"\n";
        let out = insert_similar(text, 2, "c\"d").unwrap();
        assert_eq!(
            out,
            "[[entry]]\nid = \"x\"\nsimilar = [\n    \"a\",\n    \"b\",\n    \"c\\\"d\",\n]\nanswer = \"y\"\n"
        );
    }
}
