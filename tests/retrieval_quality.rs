//! Retrieval quality on the bundled knowledge base, measured on `eval/bundled-queries.tsv`
//! (150 customer phrasings written for this purpose, none of them a knowledge-base
//! question) and on the *tune* half of `eval/customer-messages.tsv` (the test half is
//! for reporting only). The floors sit a little under today's figures so a change that
//! makes answers worse fails here, not in front of customers. No timing is asserted.

mod common;

use std::sync::Arc;

use kefu::intents::IntentSet;
use kefu::retrieval::eval::{load_queries, recall};
use kefu::retrieval::messages::{evaluate, load_messages};
use kefu::retrieval::{Audience, RetrievalConfig, Retriever};

/// A fixed day, not the clock: four gold entries are campaigns that expire.
fn today() -> time::Date {
    kefu::knowledge::parse_date("2026-11-24").unwrap()
}

#[test]
fn bundled_knowledge_base_recall_stays_above_its_floor() {
    let kb = common::bundled_kb();
    let r = Retriever::new(Arc::new(kb), RetrievalConfig::default()).unwrap();
    let queries = load_queries(&common::repo("eval/bundled-queries.tsv")).unwrap();
    assert_eq!(queries.len(), 150);
    let report = recall(&r, &queries, None, today(), |_| {}).unwrap();
    // Measured 2026-11-30 on 315 entries: recall@1 0.720, recall@3 0.880,
    // recall@10 0.987, 52% answered at once with recall@1 0.833 among them; after the
    // synonym form and the phrasing round of the `quality` branch 0.760 / 0.913 / 0.987,
    // 60% answered at once with recall@1 0.844.
    assert!(report.recall_at_1 >= 0.72, "{report:?}");
    assert!(report.recall_at_3 >= 0.88, "{report:?}");
    assert!(report.recall_at_10 >= 0.95, "{report:?}");
    assert!(report.confident_precision >= 0.80, "{report:?}");
}

#[test]
fn first_replies_on_the_tune_half_stay_above_their_floor() {
    let kb = common::bundled_kb();
    let r = Retriever::new(Arc::new(kb), RetrievalConfig::default()).unwrap();
    let intents = IntentSet::load_dir(&common::repo("intents")).unwrap();
    let messages = load_messages(&common::repo("eval/customer-messages.tsv")).unwrap();
    let audience = Audience {
        branch: None,
        today: today(),
    };
    let report = evaluate(&r, Some(&intents), &messages, Some("tune"), audience).unwrap();
    assert!(
        report.unknown_labels.is_empty(),
        "{:?}",
        report.unknown_labels
    );
    // Measured 2026-11-30 (these thresholds were chosen on this half): 65.4% answered,
    // 91.0% of those right, 85.3% see a right entry, 90.5% of out-of-scope fall back,
    // 94.1% of intents right. After the `quality` branch (content written from this
    // half's misses, so these are not held-out figures): 84.6% / 99.1% / 99.3% /
    // 90.5% / 100%.
    let s = &report.shares;
    assert!(s.answered >= 0.80, "{s:?}");
    assert!(s.answered_precision >= 0.95, "{s:?}");
    assert!(s.seen_right >= 0.95, "{s:?}");
    assert!(s.out_of_scope_fallback >= 0.85, "{s:?}");
    assert!(s.intent_accuracy >= 0.95, "{s:?}");
}

/// A short story whose whole message falls back is ranked by its clauses (`rescue_chars`),
/// but a clause is taken only if the whole message agrees. This one is about an employer's
/// expense claim, and its last clause alone ("你能帮我催一下吗") matches a bank entry.
#[test]
fn a_short_story_is_rescued_only_by_a_clause_the_whole_message_agrees_with() {
    let kb = Arc::new(common::bundled_kb());
    let story = "我们单位的财务把我的差旅报销卡住了，你能帮我催一下吗";
    let everyone = Audience {
        branch: None,
        today: today(),
    };
    let with = |long_message_agreement: usize| {
        let config = RetrievalConfig {
            long_message_agreement,
            ..RetrievalConfig::default()
        };
        Retriever::new(kb.clone(), config).unwrap()
    };
    let shipped = with(RetrievalConfig::default().long_message_agreement)
        .rank(story, everyone)
        .unwrap();
    assert_eq!(shipped.band, kefu::retrieval::Band::NoMatch, "{shipped:?}");
    // Without the agreement check the clause is offered: the check is what keeps the
    // fallback here.
    let unchecked = with(0).rank(story, everyone).unwrap();
    assert_ne!(
        unchecked.band,
        kefu::retrieval::Band::NoMatch,
        "{unchecked:?}"
    );
}
