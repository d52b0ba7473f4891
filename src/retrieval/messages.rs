//! Evaluation on labelled customer messages (`eval/customer-messages.tsv`): what a
//! customer sees in the *first reply*, not only where the gold entry ranks.
//!
//! Each message takes the decision path of chat: an intent rule that claims the message
//! wins (`IntentSet::classify`), otherwise the retrieval band decides between an answer,
//! an offer (a confirmation or a list, [`Ranking::offered`]) and the fallback. Only the
//! public API of `retrieval` and `intents` is used, so the figures do not depend on the
//! engine's session handling (menus, hand-off), which a first message never meets.
//!
//! File format: tab separated, one header line, columns `id text labels style half`.
//! `labels` are `|`-joined entry ids, `out_of_scope`, or `intent:NAME`; `half` is
//! `tune` or `test`. Thresholds are chosen on `tune` and reported on `test`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{ContentErrors, ContentIssue, Location, Result};
use crate::intents::IntentSet;
use crate::retrieval::eval::tsv_rows;
use crate::retrieval::{Audience, Band, Ranking, Retriever};
use crate::text::search_form;

/// What a message is labelled with: any one of them is a right first reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    Entry(String),
    OutOfScope,
    Intent(String),
}

#[derive(Debug, Clone)]
pub struct LabelledMessage {
    pub id: String,
    pub text: String,
    pub labels: Vec<Label>,
    pub style: String,
    pub half: String,
}

impl LabelledMessage {
    /// What kind of message this is, for the headline figures: an FAQ question if any
    /// entry answers it, else an action if an intent does, else out of scope.
    pub fn kind(&self) -> MessageKind {
        if self.labels.iter().any(|l| matches!(l, Label::Entry(_))) {
            MessageKind::Faq
        } else if self.labels.iter().any(|l| matches!(l, Label::Intent(_))) {
            MessageKind::Intent
        } else {
            MessageKind::OutOfScope
        }
    }

    fn has_entry(&self, id: &str) -> bool {
        self.labels
            .iter()
            .any(|l| matches!(l, Label::Entry(e) if e == id))
    }

    fn has_intent(&self, name: &str) -> bool {
        self.labels
            .iter()
            .any(|l| matches!(l, Label::Intent(i) if i == name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Faq,
    Intent,
    OutOfScope,
}

/// Reads the message set; a row without labels or with an unknown half is an error
/// with its line.
pub fn load_messages(path: &Path) -> Result<Vec<LabelledMessage>> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    for (line, r) in tsv_rows(path, &["id", "text", "labels", "style", "half"])? {
        let labels: Vec<Label> = r[2]
            .split('|')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| match l {
                "out_of_scope" => Label::OutOfScope,
                _ => match l.strip_prefix("intent:") {
                    Some(name) => Label::Intent(name.trim().to_owned()),
                    None => Label::Entry(l.to_owned()),
                },
            })
            .collect();
        if labels.is_empty() {
            issues.push(ContentIssue {
                location: Location::new(path, line, None),
                message: "message has no labels".into(),
            });
        }
        if !matches!(r[4].as_str(), "tune" | "test") {
            issues.push(ContentIssue {
                location: Location::new(path, line, None),
                message: format!("half \"{}\" is neither tune nor test", r[4]),
            });
        }
        out.push(LabelledMessage {
            id: r[0].clone(),
            text: r[1].clone(),
            labels,
            style: r[3].clone(),
            half: r[4].clone(),
        });
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(ContentErrors(issues).into())
    }
}

/// The first reply a message gets, as chat decides it.
#[derive(Debug, Clone, PartialEq)]
pub enum FirstReply {
    /// Nothing searchable in the message (emoji only, punctuation).
    Notice,
    Intent(String),
    /// The answer's entry, and the close runners-up numbered under it
    /// ([`Ranking::near_alternatives`]); the editor's related questions that follow
    /// them are not listed.
    Answer(String, Vec<String>),
    /// A confirmation (one entry) or a numbered list.
    Offer(Vec<String>),
    Fallback,
}

/// Decides the first reply to `text` the way chat does: intents first, then the
/// retrieval band.
pub fn first_reply(
    retriever: &Retriever,
    intents: Option<&IntentSet>,
    text: &str,
    audience: Audience<'_>,
) -> Result<(FirstReply, Option<Ranking>)> {
    if search_form(text).is_empty() {
        return Ok((FirstReply::Notice, None));
    }
    let out_of_scope = retriever.knowledge_base().out_of_scope();
    if let Some(m) = intents.and_then(|s| s.classify_in_scope(text, audience.today, out_of_scope)) {
        return Ok((FirstReply::Intent(m.name), None));
    }
    let ranking = retriever.rank(text, audience)?;
    let id = |i: usize| retriever.entry(i).map(|e| e.id.clone()).unwrap_or_default();
    let reply = match (ranking.band, ranking.top()) {
        (Band::Confident, Some(top)) => FirstReply::Answer(
            id(top.entry),
            ranking
                .near_alternatives()
                .iter()
                .map(|c| id(c.entry))
                .collect(),
        ),
        (Band::Uncertain, _) => {
            FirstReply::Offer(ranking.offered().iter().map(|c| id(c.entry)).collect())
        }
        (Band::NoMatch, _) | (Band::Confident, None) => FirstReply::Fallback,
    };
    Ok((reply, Some(ranking)))
}

/// Counts for one group of messages (all, or one style).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub messages: usize,
    /// FAQ messages (labelled with at least one entry).
    pub faq: usize,
    /// FAQ messages answered in the first reply, and how many of those answers were a
    /// labelled entry.
    pub answered: usize,
    pub answered_right: usize,
    /// FAQ messages whose first reply shows a labelled entry (answer, confirmation or list).
    pub seen_right: usize,
    /// Wrong answers with a labelled entry among the close runners-up numbered under
    /// them: one tap away, but not counted in `seen_right` (the issue's measure).
    pub wrong_with_right_below: usize,
    /// FAQ messages asked back with a single candidate (confirmation) and with a list.
    pub confirmed: usize,
    pub listed: usize,
    /// FAQ messages an intent rule claimed instead.
    pub taken_by_intent: usize,
    pub out_of_scope: usize,
    /// Out-of-scope messages that got the fallback (or a notice), and that got an answer.
    pub out_of_scope_fallback: usize,
    pub out_of_scope_answered: usize,
    pub intent: usize,
    pub intent_right: usize,
}

impl Tally {
    fn add(&mut self, m: &LabelledMessage, reply: &FirstReply) {
        self.messages += 1;
        match m.kind() {
            MessageKind::Faq => {
                self.faq += 1;
                match reply {
                    FirstReply::Answer(id, near) => {
                        self.answered += 1;
                        if m.has_entry(id) {
                            self.answered_right += 1;
                            self.seen_right += 1;
                        } else if near.iter().any(|n| m.has_entry(n)) {
                            self.wrong_with_right_below += 1;
                        }
                    }
                    FirstReply::Offer(ids) => {
                        if ids.len() == 1 {
                            self.confirmed += 1;
                        } else {
                            self.listed += 1;
                        }
                        if ids.iter().any(|id| m.has_entry(id)) {
                            self.seen_right += 1;
                        }
                    }
                    FirstReply::Intent(name) => {
                        self.taken_by_intent += 1;
                        // An action that the labels also accept is right.
                        if m.has_intent(name) {
                            self.answered += 1;
                            self.answered_right += 1;
                            self.seen_right += 1;
                        }
                    }
                    FirstReply::Notice | FirstReply::Fallback => {}
                }
            }
            MessageKind::Intent => {
                self.intent += 1;
                if matches!(reply, FirstReply::Intent(n) if m.has_intent(n)) {
                    self.intent_right += 1;
                }
            }
            MessageKind::OutOfScope => {
                self.out_of_scope += 1;
                match reply {
                    FirstReply::Fallback | FirstReply::Notice => self.out_of_scope_fallback += 1,
                    FirstReply::Answer(..) => self.out_of_scope_answered += 1,
                    _ => {}
                }
            }
        }
    }
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// Shares derived from a [`Tally`], as `--json` and the README print them.
#[derive(Debug, Clone, Serialize)]
pub struct Shares {
    /// Answered in the first reply, of FAQ messages.
    pub answered: f64,
    /// Right, of those answered.
    pub answered_precision: f64,
    /// A right entry in the first reply (answer or offer), of FAQ messages.
    pub seen_right: f64,
    /// Fallback, of out-of-scope messages.
    pub out_of_scope_fallback: f64,
    /// Right intent, of intent messages.
    pub intent_accuracy: f64,
}

impl From<&Tally> for Shares {
    fn from(t: &Tally) -> Self {
        Shares {
            answered: share(t.answered, t.faq),
            answered_precision: share(t.answered_right, t.answered),
            seen_right: share(t.seen_right, t.faq),
            out_of_scope_fallback: share(t.out_of_scope_fallback, t.out_of_scope),
            intent_accuracy: share(t.intent_right, t.intent),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StyleReport {
    pub style: String,
    pub counts: Tally,
    pub shares: Shares,
}

/// One message whose first reply was not right: for reading, not for tuning on `test`.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub id: String,
    pub text: String,
    pub labels: String,
    pub reply: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageReport {
    pub half: Option<String>,
    pub counts: Tally,
    pub shares: Shares,
    pub styles: Vec<StyleReport>,
    /// Entry labels that name no entry of the knowledge base (counted as never right).
    pub unknown_labels: Vec<String>,
    pub misses: Vec<Miss>,
}

fn describe(reply: &FirstReply) -> String {
    match reply {
        FirstReply::Notice => "notice".into(),
        FirstReply::Intent(n) => format!("intent:{n}"),
        FirstReply::Answer(id, near) if near.is_empty() => format!("answer {id}"),
        FirstReply::Answer(id, near) => format!("answer {id} (then {})", near.join(",")),
        FirstReply::Offer(ids) if ids.len() == 1 => format!("confirm {}", ids[0]),
        FirstReply::Offer(ids) => format!("list {}", ids.join(",")),
        FirstReply::Fallback => "fallback".into(),
    }
}

/// Runs every message of `half` (all if `None`) through [`first_reply`].
pub fn evaluate(
    retriever: &Retriever,
    intents: Option<&IntentSet>,
    messages: &[LabelledMessage],
    half: Option<&str>,
    audience: Audience<'_>,
) -> Result<MessageReport> {
    let kb = retriever.knowledge_base();
    let mut total = Tally::default();
    let mut styles: BTreeMap<String, Tally> = BTreeMap::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut misses = Vec::new();
    for m in messages.iter().filter(|m| half.is_none_or(|h| m.half == h)) {
        for l in &m.labels {
            if let Label::Entry(id) = l {
                if kb.index_of(id).is_none() && !unknown.contains(id) {
                    unknown.push(id.clone());
                }
            }
        }
        let (reply, _) = first_reply(retriever, intents, &m.text, audience)?;
        total.add(m, &reply);
        styles.entry(m.style.clone()).or_default().add(m, &reply);
        let right = match (m.kind(), &reply) {
            (MessageKind::Faq, FirstReply::Answer(id, _)) => m.has_entry(id),
            (_, FirstReply::Intent(n)) => m.has_intent(n),
            (MessageKind::OutOfScope, FirstReply::Fallback | FirstReply::Notice) => true,
            _ => false,
        };
        if !right {
            misses.push(Miss {
                id: m.id.clone(),
                text: m.text.clone(),
                labels: m
                    .labels
                    .iter()
                    .map(|l| match l {
                        Label::Entry(e) => e.clone(),
                        Label::OutOfScope => "out_of_scope".into(),
                        Label::Intent(i) => format!("intent:{i}"),
                    })
                    .collect::<Vec<_>>()
                    .join("|"),
                reply: describe(&reply),
            });
        }
    }
    unknown.sort();
    Ok(MessageReport {
        half: half.map(str::to_owned),
        shares: Shares::from(&total),
        counts: total,
        styles: styles
            .into_iter()
            .map(|(style, counts)| StyleReport {
                style,
                shares: Shares::from(&counts),
                counts,
            })
            .collect(),
        unknown_labels: unknown,
        misses,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::knowledge::{Entry, KnowledgeBase, Scope};
    use crate::retrieval::RetrievalConfig;

    fn entry(id: &str, q: &str, similar: &[&str]) -> Entry {
        Entry {
            id: id.into(),
            category: "c".into(),
            question: q.into(),
            similar: similar.iter().map(|s| s.to_string()).collect(),
            answer: format!("answer of {id}"),
            related: vec![],
            keywords: vec![],
            negative: vec![],
            scope: Scope::All,
            valid_from: None,
            valid_until: None,
            location: Location::new("t.toml", 1, None),
        }
    }

    #[test]
    fn first_replies_are_tallied_by_kind_and_style() {
        let kb = KnowledgeBase::from_entries(vec![
            entry("lost", "银行卡丢了怎么办", &["卡丢了怎么挂失"]),
            entry("limit", "转账限额是多少", &["一天最多能转多少钱"]),
        ])
        .unwrap();
        let r = Retriever::new(Arc::new(kb), RetrievalConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tsv");
        std::fs::write(
            &path,
            "id\ttext\tlabels\tstyle\thalf\n\
             1\t银行卡丢了怎么办\tlost\tplain\ttune\n\
             2\t转账限额是多少\tlost\tplain\ttune\n\
             3\t今天天气怎么样\tout_of_scope\toff\ttune\n\
             4\t银行卡丢了怎么办\tlost\tplain\ttest\n",
        )
        .unwrap();
        let msgs = load_messages(&path).unwrap();
        let audience = Audience {
            branch: None,
            today: crate::knowledge::parse_date("2026-11-24").unwrap(),
        };
        let rep = evaluate(&r, None, &msgs, Some("tune"), audience).unwrap();
        assert_eq!(rep.counts.messages, 3);
        assert_eq!(rep.counts.faq, 2);
        assert_eq!(rep.counts.answered, 2, "{rep:?}");
        assert_eq!(rep.counts.answered_right, 1);
        assert_eq!(rep.counts.out_of_scope_fallback, 1);
        assert_eq!(rep.styles.len(), 2);
        assert_eq!(rep.misses.len(), 1);
        assert_eq!(rep.misses[0].id, "2");
    }

    #[test]
    fn rows_without_labels_or_half_are_errors_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tsv");
        std::fs::write(
            &path,
            "id\ttext\tlabels\tstyle\thalf\n1\t卡丢了\t\tplain\ttune\n2\t卡丢了\tlost\tplain\tboth\n",
        )
        .unwrap();
        let err = load_messages(&path).unwrap_err().to_string();
        assert!(err.contains(":2") && err.contains("no labels"), "{err}");
        assert!(err.contains(":3") && err.contains("both"), "{err}");
    }
}
