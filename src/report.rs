//! Reports for the content team, read from the store's analytics events.

use std::collections::HashMap;

use serde::Serialize;

use crate::retrieval::{text_features, Band, Idf, Prepared, Weights};
use crate::store::{Event, EventKind};
use crate::text::Analyzer;

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
}
