//! The blind evaluation set `eval/customer-messages.tsv` stays usable: every label names an
//! entry or intent that exists, both halves carry every style, and no message has been
//! copied into the knowledge base (which would turn the test half into a training set).
//! The calibration set `eval/calibration-messages.tsv` (tuning only) is held to the same
//! label and no-copy rules: a stale label or a copied message would skew the bands chosen on it.
//! So is the third blind tuning set `eval/blind3-messages.tsv` (next round's tuning only), and
//! the fourth blind set `eval/blind4-messages.tsv` (measured once at the end of round 4, then
//! the next round's tuning set), and likewise the fifth, `eval/blind5-messages.tsv` (round 5),
//! the sixth, `eval/blind6-messages.tsv` (measured once before round 7's content work, then
//! its tuning set), the seventh, `eval/blind7-messages.tsv` (measured once before round 8's
//! content work, then its tuning set), the eighth, `eval/blind8-messages.tsv` (measured
//! once before round 9's work, then its tuning set), and the ninth, `eval/blind9-messages.tsv`
//! (measured once at the end of round 9, then the next round's tuning set), and the tenth,
//! `eval/blind10-messages.tsv` (measured once before round 11's work, then its tuning set),
//! the eleventh, `eval/blind11-messages.tsv` (measured once before round 12's work, then
//! its tuning set), the twelfth, `eval/blind12-messages.tsv` (measured once before round
//! 13's work, then its tuning set), the thirteenth, `eval/blind13-messages.tsv` (measured
//! once before round 14's work, then its tuning set), the fourteenth,
//! `eval/blind14-messages.tsv` (written at the same time, measured once before round 14's
//! work too, then its tuning set), the fifteenth, `eval/blind15-messages.tsv` (measured
//! once after round 14's work, on round 13's and round 14's state, then the next round's
//! tuning set), the sixteenth, `eval/blind16-messages.tsv` (measured once after round
//! 16's work, on round 15's and round 16's state, then the next round's tuning set), the
//! seventeenth, `eval/blind17-messages.tsv` (measured once at the start of round 18, on
//! round 17's state, then round 18's tuning set), the eighteenth,
//! `eval/blind18-messages.tsv` (measured once after round 18's work, on round 17's and
//! round 18's state, then the next round's tuning set), the nineteenth,
//! `eval/blind19-messages.tsv` (measured once on round 19's state, then round 20's tuning
//! set), the twentieth, `eval/blind20-messages.tsv` (measured once at the end of round
//! 20, on round 19's and round 20's state, then the next round's tuning set), the
//! twenty-first, `eval/blind21-messages.tsv` (measured once at the end of round 21, on
//! round 20's and round 21's state, then the next round's tuning set), the
//! twenty-second, `eval/blind22-messages.tsv` (measured once at the end of round 22, then
//! the next round's tuning set), the twenty-third, `eval/blind23-messages.tsv` (measured
//! once at the end of round 24, then the next round's tuning set), the twenty-fourth,
//! `eval/blind24-messages.tsv` (measured once at the end of round 26, then the next round's
//! tuning set), the twenty-fifth, `eval/blind25-messages.tsv` (measured once at the end
//! of round 28, then the next round's tuning set), the twenty-sixth,
//! `eval/blind26-messages.tsv` (measured once at the end of round 33, then the next round's
//! tuning set), the twenty-seventh, `eval/blind27-messages.tsv` (measured once at the
//! end of round 35, then the next round's tuning set), the twenty-eighth,
//! `eval/blind28-messages.tsv` (measured once at the end of round 37, then the next round's
//! tuning set), the twenty-ninth, `eval/blind29-messages.tsv` (measured once at the end
//! of round 38, then the next round's tuning set), the thirtieth,
//! `eval/blind30-messages.tsv` (measured once at the end of round 40, then the next round's
//! tuning set), the thirty-first, `eval/blind31-messages.tsv` (measured once at the end
//! of round 42, then the next round's tuning set), the thirty-second,
//! `eval/blind32-messages.tsv` (measured once at the end of round 45, then the next
//! round's tuning set), the thirty-third, `eval/blind33-messages.tsv` (measured once at
//! the end of round 46, then the next round's tuning set), the thirty-fourth,
//! `eval/blind34-messages.tsv` (measured once at the end of round 47, then the next
//! round's tuning set), the thirty-fifth, `eval/blind35-messages.tsv` (measured once at
//! the end of round 48, then the next round's tuning set), the thirty-sixth,
//! `eval/blind36-messages.tsv` (measured once at the end of round 50, then the next
//! round's tuning set), the thirty-seventh, `eval/blind37-messages.tsv` (measured once
//! at the end of round 52, then the next round's tuning set), the thirty-eighth,
//! `eval/blind38-messages.tsv` (measured once at the end of round 53, then the next round's
//! tuning set), the thirty-ninth, `eval/blind39-messages.tsv` (measured once at the end
//! of round 56, then the next round's tuning set), the fortieth,
//! `eval/blind40-messages.tsv` (measured once at the end of round 57, then the next round's
//! tuning set), the forty-first, `eval/blind41-messages.tsv` (measured once at the end
//! of round 58, then the next round's tuning set), the forty-second,
//! `eval/blind42-messages.tsv` (measured once at the end of round 59, then the next round's
//! tuning set), the forty-third, `eval/blind43-messages.tsv` (measured once at the end
//! of round 62, then the next round's tuning set), the forty-fourth,
//! `eval/blind44-messages.tsv` (measured once at the end of round 63, then the next round's
//! tuning set), the forty-fifth, `eval/blind45-messages.tsv` (measured once at the end
//! of round 64, then the next round's tuning set), and the forty-sixth,
//! `eval/blind46-messages.tsv` (measured once at the end of round 65, then the next round's
//! tuning set).

mod common;

use std::collections::{BTreeMap, HashSet};

use kefu::intents::IntentSet;

const STYLES: [&str; 10] = [
    "plain",
    "typo",
    "regional",
    "colloquial",
    "traditional",
    "emoji",
    "fullwidth",
    "long",
    "action",
    "out_of_scope",
];

/// Messages that were written blind and turned out to equal a knowledge-base question word
/// for word (short, everyday wordings), compared as [`wording`] compares them. They are
/// allowed; any other match is a leak. The last six (an emoji or a comma apart) were found
/// when the comparison began to ignore emoji and punctuation: each knowledge-base question
/// was in the first commit (f9eb44e, 2026-11-24), before the set was written (2026-11-30).
const BLIND_COINCIDENCES: [&str; 14] = [
    "信用卡账单怎么分期",
    "信用卡年费怎么免",
    "跨行转账要手续费吗",
    "收不到短信验证码怎么办",
    "换了新手机怎么登录手机银行",
    "现在存款利率是多少",
    "查余额",
    "转人工",
    "借记卡有年费吗",
    "信用卡逾期了会怎样",
    "网点几点开门",
    "我要投诉",
    "信用卡能取现金吗",
    "预留手机号换了怎么改",
];

/// The calibration set's own blind coincidences with knowledge-base questions.
const CALIBRATION_COINCIDENCES: [&str; 4] = [
    "信用卡年费怎么免",
    "收不到短信验证码怎么办",
    "我要跟真人说话",
    "预留手机号换了怎么改",
];

/// Tuning messages that kefu reads exactly as a test-half message: m060 (test, 信用卡帐单日是几号,
/// a typo of 账) and the traditional-script m141 (tune) and c079 (calibration), 信用卡帳單日是幾號,
/// which folds to the same text. Written blind by different writers; they are allowed and
/// reported (README, issue 11): one test message has had tuning twins since the sets were written.
const TEST_TWINS: [&str; 1] = ["信用卡帐单日是几号"];

const MESSAGES: &str = "eval/customer-messages.tsv";
const CALIBRATION: &str = "eval/calibration-messages.tsv";
const BLIND3: &str = "eval/blind3-messages.tsv";
const BLIND4: &str = "eval/blind4-messages.tsv";
const BLIND5: &str = "eval/blind5-messages.tsv";
const BLIND6: &str = "eval/blind6-messages.tsv";
const BLIND7: &str = "eval/blind7-messages.tsv";
const BLIND8: &str = "eval/blind8-messages.tsv";
const BLIND9: &str = "eval/blind9-messages.tsv";
const BLIND10: &str = "eval/blind10-messages.tsv";
const BLIND11: &str = "eval/blind11-messages.tsv";
const BLIND12: &str = "eval/blind12-messages.tsv";
const BLIND13: &str = "eval/blind13-messages.tsv";
const BLIND14: &str = "eval/blind14-messages.tsv";
const BLIND15: &str = "eval/blind15-messages.tsv";
const BLIND16: &str = "eval/blind16-messages.tsv";
const BLIND17: &str = "eval/blind17-messages.tsv";
const BLIND18: &str = "eval/blind18-messages.tsv";
const BLIND19: &str = "eval/blind19-messages.tsv";
const BLIND20: &str = "eval/blind20-messages.tsv";
const BLIND21: &str = "eval/blind21-messages.tsv";
const BLIND22: &str = "eval/blind22-messages.tsv";
const BLIND23: &str = "eval/blind23-messages.tsv";
const BLIND24: &str = "eval/blind24-messages.tsv";
const BLIND25: &str = "eval/blind25-messages.tsv";
const BLIND26: &str = "eval/blind26-messages.tsv";
const BLIND27: &str = "eval/blind27-messages.tsv";
const BLIND28: &str = "eval/blind28-messages.tsv";
const BLIND29: &str = "eval/blind29-messages.tsv";
const BLIND30: &str = "eval/blind30-messages.tsv";
const BLIND31: &str = "eval/blind31-messages.tsv";
const BLIND32: &str = "eval/blind32-messages.tsv";
const BLIND33: &str = "eval/blind33-messages.tsv";
const BLIND34: &str = "eval/blind34-messages.tsv";
const BLIND35: &str = "eval/blind35-messages.tsv";
const BLIND36: &str = "eval/blind36-messages.tsv";
const BLIND37: &str = "eval/blind37-messages.tsv";
const BLIND38: &str = "eval/blind38-messages.tsv";
const BLIND39: &str = "eval/blind39-messages.tsv";
const BLIND40: &str = "eval/blind40-messages.tsv";
const BLIND41: &str = "eval/blind41-messages.tsv";
const BLIND42: &str = "eval/blind42-messages.tsv";
const BLIND43: &str = "eval/blind43-messages.tsv";
const BLIND44: &str = "eval/blind44-messages.tsv";
const BLIND45: &str = "eval/blind45-messages.tsv";
const BLIND46: &str = "eval/blind46-messages.tsv";

struct Row {
    id: String,
    text: String,
    labels: Vec<String>,
    style: String,
    half: String,
}

fn rows(path: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(common::repo(path))
        .unwrap_or_else(|e| panic!("{path} is not readable UTF-8: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id\ttext\tlabels\tstyle\thalf"));
    lines
        .enumerate()
        .map(|(n, line)| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 5, "{path} line {}: {line:?}", n + 2);
            Row {
                id: f[0].to_string(),
                text: f[1].to_string(),
                labels: f[2].split('|').map(str::to_string).collect(),
                style: f[3].to_string(),
                half: f[4].to_string(),
            }
        })
        .collect()
}

#[test]
fn every_label_names_an_existing_entry_or_intent() {
    let kb = common::bundled_kb();
    let intents = IntentSet::load_dir(&common::repo("intents")).expect("bundled intents load");
    let names: HashSet<&str> = intents.intents().iter().map(|i| i.name.as_str()).collect();
    let mut ids = HashSet::new();
    // Every set, in the order it was written (IN_WRITING_ORDER names each file once).
    for r in IN_WRITING_ORDER.iter().flat_map(|path| rows(path)) {
        assert!(ids.insert(r.id.clone()), "duplicate id {}", r.id);
        assert!(!r.text.trim().is_empty(), "{}: empty text", r.id);
        for label in &r.labels {
            let known = if label == "out_of_scope" {
                r.labels.len() == 1
            } else if let Some(name) = label.strip_prefix("intent:") {
                names.contains(name)
            } else {
                kb.index_of(label).is_some()
            };
            assert!(known, "{}: unknown or mixed label {label:?}", r.id);
        }
    }
}

#[test]
fn both_halves_carry_every_style() {
    let rows = rows(MESSAGES);
    assert!(rows.len() >= 300, "{} messages", rows.len());
    let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in &rows {
        assert!(
            STYLES.contains(&r.style.as_str()),
            "{}: style {}",
            r.id,
            r.style
        );
        assert!(
            r.half == "tune" || r.half == "test",
            "{}: half {}",
            r.id,
            r.half
        );
        *count
            .entry((r.style.as_str(), r.half.as_str()))
            .or_default() += 1;
    }
    for style in STYLES {
        let tune = count.get(&(style, "tune")).copied().unwrap_or(0);
        let test = count.get(&(style, "test")).copied().unwrap_or(0);
        // At least ~8 % of the set per style, split evenly by the alternating rule.
        assert!(
            (tune + test) * 100 >= rows.len() * 8,
            "{style}: {}",
            tune + test
        );
        assert!(
            tune.abs_diff(test) <= 1,
            "{style}: tune {tune}, test {test}"
        );
    }
    let oos = rows.iter().filter(|r| r.style == "out_of_scope").count();
    assert!(oos >= 40, "{oos} out-of-scope messages");
}

#[test]
fn no_message_is_copied_into_the_knowledge_base() {
    let kb = common::bundled_kb();
    let questions: HashSet<String> = kb
        .entries()
        .iter()
        .flat_map(|e| e.questions())
        .map(wording)
        .collect();
    let leaked: Vec<String> = rows(MESSAGES)
        .into_iter()
        .filter(|r| !allowed(&BLIND_COINCIDENCES, &r.text))
        .chain(
            rows(CALIBRATION)
                .into_iter()
                .filter(|r| !allowed(&CALIBRATION_COINCIDENCES, &r.text)),
        )
        // blind3 onwards have no allowed coincidences: the ones found were removed.
        .chain(IN_WRITING_ORDER[2..].iter().flat_map(|path| rows(path)))
        .filter(|r| questions.contains(&wording(&r.text)))
        .map(|r| format!("{} {}", r.id, r.text))
        .collect();
    assert!(
        leaked.is_empty(),
        "eval messages in the knowledge base: {leaked:?}"
    );
}

/// The main set's two halves share no wording as kefu reads it, except the known twin:
/// a tune-half twin of a test message would let tuning see the report set.
#[test]
fn the_halves_share_no_wording() {
    let rows = rows(MESSAGES);
    let test: HashSet<String> = rows
        .iter()
        .filter(|r| r.half == "test")
        .map(|r| wording(&r.text))
        .collect();
    let twins: Vec<String> = rows
        .iter()
        .filter(|r| r.half == "tune" && test.contains(&wording(&r.text)))
        .filter(|r| !allowed(&TEST_TWINS, &r.text))
        .map(|r| format!("{} {}", r.id, r.text))
        .collect();
    assert!(
        twins.is_empty(),
        "tune-half twins of test messages: {twins:?}"
    );
}

#[test]
fn tuning_sets_are_tuning_only() {
    for path in &IN_WRITING_ORDER[1..] {
        tuning_only(path);
    }
}

/// Every message set in the order it was written. From the fifth blind set on, each set is
/// checked against all sets before it: the same stock phrasings come to mind to every
/// writer, and a repeat would make a set's one unseen measurement look at a message some set
/// has already been tuned on. Messages removed that way: the fifth set 24 of 180, the sixth
/// 9, the seventh 6 (and 4 equal to knowledge-base questions), the eighth 16 (and 1), the
/// ninth 9 (and 1), the tenth 2 (and 2), the eleventh 4 (and 1), the twelfth 8 (and 0),
/// the thirteenth 15 (and 2; and 1 equal to a fourteenth-set message), the fourteenth 4 (and 0),
/// the fifteenth 8 (and 1), the sixteenth 6 (and 1), the seventeenth 5 (and 2), the
/// eighteenth 4 (and 0), the nineteenth 2 (and 0), the twentieth 0 (and 0), the twenty-first 10
/// (and 0), the twenty-second 19 (and 2), the twenty-third 8 (and 0), the twenty-fourth 3
/// (and 0), the twenty-fifth 8 (and 1), the twenty-sixth 2 (and 1), the twenty-seventh 9
/// (and 0), the twenty-eighth 1 (and 0), the twenty-ninth 6 (and 1), the thirtieth 0 (and 0),
/// the thirty-first 5 (and 0), the thirty-second 4 (and 0), the thirty-third 1 (and 0),
/// the thirty-fourth 11 (and 0), the thirty-fifth 3 (and 0), the thirty-sixth 0 (and 0),
/// the thirty-seventh 7 (and 0), the thirty-eighth 0 (and 0), the thirty-ninth 1 (and 0),
/// the fortieth 1 (and 0), the forty-first 7 (and 1), the forty-second 3 (and 0), the
/// forty-third 3 (and 0), the forty-fourth 3 (and 0), the forty-fifth 1 (and 0), the
/// forty-sixth 3 (and 0).
const IN_WRITING_ORDER: [&str; 46] = [
    MESSAGES,
    CALIBRATION,
    BLIND3,
    BLIND4,
    BLIND5,
    BLIND6,
    BLIND7,
    BLIND8,
    BLIND9,
    BLIND10,
    BLIND11,
    BLIND12,
    BLIND13,
    BLIND14,
    BLIND15,
    BLIND16,
    BLIND17,
    BLIND18,
    BLIND19,
    BLIND20,
    BLIND21,
    BLIND22,
    BLIND23,
    BLIND24,
    BLIND25,
    BLIND26,
    BLIND27,
    BLIND28,
    BLIND29,
    BLIND30,
    BLIND31,
    BLIND32,
    BLIND33,
    BLIND34,
    BLIND35,
    BLIND36,
    BLIND37,
    BLIND38,
    BLIND39,
    BLIND40,
    BLIND41,
    BLIND42,
    BLIND43,
    BLIND44,
    BLIND45,
    BLIND46,
];

#[test]
fn no_blind_set_repeats_an_earlier_set() {
    let fifth = IN_WRITING_ORDER
        .iter()
        .position(|p| *p == BLIND5)
        .expect("the fifth blind set is listed");
    for (i, path) in IN_WRITING_ORDER.iter().enumerate().skip(fifth) {
        repeats_no_earlier_set(path, &IN_WRITING_ORDER[..i]);
    }
}

fn repeats_no_earlier_set(path: &str, earlier: &[&str]) {
    let earlier: HashSet<String> = earlier
        .iter()
        .flat_map(|path| rows(path))
        .map(|r| wording(&r.text))
        .collect();
    // Collect every repeat rather than stop at the first, so a writer sees them all at once.
    let repeats: Vec<String> = rows(path)
        .into_iter()
        .filter(|r| earlier.contains(&wording(&r.text)))
        .map(|r| format!("{} {}", r.id, r.text))
        .collect();
    assert!(
        repeats.is_empty(),
        "{path} repeats messages of an earlier set: {repeats:?}"
    );
}

/// The text as kefu compares it ([`kefu::text::search_form`]: full-width folded, traditional
/// to simplified, lower case), with letters and digits only: "卡丢了😭怎么办？", "卡丢了 怎么办"
/// and "卡丟了怎麼辦" are the same wording, and so are "Python" and "python".
fn allowed(list: &[&str], text: &str) -> bool {
    let w = wording(text);
    list.iter().any(|a| wording(a) == w)
}

fn wording(text: &str) -> String {
    kefu::text::search_form(text)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// A tuning set has no test half, uses the main set's styles, and repeats no wording of the
/// held-out half (tuning on it would leak the test half).
fn tuning_only(path: &str) {
    let held_out: HashSet<String> = rows(MESSAGES)
        .iter()
        .filter(|r| r.half == "test")
        .map(|r| wording(&r.text))
        .collect();
    let rows = rows(path);
    // The twenty-sixth and twenty-seventh sets were written with 150 messages, not 180, and
    // kept 143 and 139 after their content gaps and repeats were removed. The floor is there
    // to catch a truncated or mis-split file, not to fix a set's size, so it is 130.
    assert!(rows.len() >= 130, "{path}: {} messages", rows.len());
    // Every repeat at once, so a writer removes them all in one pass (the twelfth set's
    // writer found a second one by hand after the first was reported).
    let repeats: Vec<&str> = rows
        .iter()
        .filter(|r| !allowed(&TEST_TWINS, &r.text) && held_out.contains(&wording(&r.text)))
        .map(|r| r.id.as_str())
        .collect();
    assert!(
        repeats.is_empty(),
        "{path}: repeat test-half messages: {repeats:?}"
    );
    for r in &rows {
        assert_eq!(
            r.half, "tune",
            "{path} {}: a tuning set has no test half",
            r.id
        );
        assert!(
            STYLES.contains(&r.style.as_str()),
            "{}: style {}",
            r.id,
            r.style
        );
    }
}
