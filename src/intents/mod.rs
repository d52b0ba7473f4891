//! Intent rules: messages that ask kefu to *do* something (转人工, 查余额, 转账) rather
//! than ask a question. Rules are content, edited in `intents/*.toml` like the knowledge
//! base, and carry their own examples and near misses, which `kefu kb check` runs: an
//! editor who widens a pattern learns at once that "转账限额是多少" now means a transfer.
//!
//! Matching is on [`canonical`] text (punctuation kept, so "1.5万" survives).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month};
use toml::Spanned;

use crate::error::{ContentErrors, ContentIssue, Error, Location, Result};
use crate::knowledge::content::{read_text, toml_issue, LineIndex};
use crate::text::{canonical, search_form};

/// Who may run an intent: a follower has only followed the account; a verified
/// customer has bound a card through the banking backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthLevel {
    #[default]
    Follower,
    Verified,
}

/// What the engine does when an intent matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Handoff,
    Cancel,
    Greeting,
    Thanks,
    Satisfied,
    Unsatisfied,
    Balance,
    Transactions,
    CardBill,
    Repay,
    Transfer,
    Branches,
    QueueTicket,
    Unbind,
}

impl Action {
    /// Account actions go through the banking backend and need a bound card.
    pub fn is_banking(self) -> bool {
        matches!(
            self,
            Action::Balance
                | Action::Transactions
                | Action::CardBill
                | Action::Repay
                | Action::Transfer
                | Action::Branches
                | Action::QueueTicket
                | Action::Unbind
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    Amount,
    CardTail,
    DateRange,
    Payee,
}

/// A value pulled out of the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum SlotValue {
    /// Amount in fen (1/100 yuan), so 1.5万 is exact.
    Amount(u64),
    CardTail(String),
    DateRange {
        from: Date,
        to: Date,
    },
    Payee(String),
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub name: String,
    pub action: Action,
    pub auth: AuthLevel,
    pub priority: i32,
    patterns: Vec<Regex>,
    keywords: Vec<Vec<String>>,
    exclude: Vec<Regex>,
    pub slots: Vec<(String, SlotKind)>,
    pub examples: Vec<String>,
    pub near_misses: Vec<String>,
    pub location: Location,
}

impl Intent {
    fn matches(&self, text: &str) -> bool {
        if self.exclude.iter().any(|r| r.is_match(text)) {
            return false;
        }
        self.patterns.iter().any(|r| r.is_match(text))
            || self
                .keywords
                .iter()
                .any(|set| set.iter().all(|k| text.contains(k.as_str())))
    }
}

/// A matched intent with its slots.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentMatch {
    pub name: String,
    pub action: Action,
    pub auth: AuthLevel,
    pub slots: Vec<(String, SlotValue)>,
}

#[derive(Debug, Clone, Default)]
pub struct IntentSet {
    intents: Vec<Intent>,
}

impl IntentSet {
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut intents = Vec::new();
        let mut issues = Vec::new();
        for f in &files {
            match load_file(f) {
                Ok(mut found) => intents.append(&mut found),
                Err(mut found) => issues.append(&mut found),
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for i in &intents {
            if !seen.insert(&i.name) {
                issues.push(ContentIssue {
                    location: i.location.clone(),
                    message: format!("intent \"{}\" is defined twice", i.name),
                });
            }
        }
        if !issues.is_empty() {
            return Err(ContentErrors(issues).into());
        }
        let set = IntentSet::from_intents(intents);
        set.check_examples()?;
        Ok(set)
    }

    fn from_intents(mut intents: Vec<Intent>) -> Self {
        // Stable: equal priorities keep file order.
        intents.sort_by_key(|i| std::cmp::Reverse(i.priority));
        IntentSet { intents }
    }

    /// Every example must resolve to its own intent and no near miss may trigger it.
    fn check_examples(&self) -> Result<()> {
        let mut issues = Vec::new();
        let today = Date::from_calendar_date(2026, Month::January, 15).unwrap_or(Date::MIN);
        for i in &self.intents {
            for ex in &i.examples {
                let got = self.classify(ex, today).map(|m| m.name);
                if got.as_deref() != Some(i.name.as_str()) {
                    issues.push(ContentIssue {
                        location: i.location.clone(),
                        message: format!(
                            "intent \"{}\": example \"{ex}\" is recognised as {}",
                            i.name,
                            got.map_or("no intent".to_owned(), |n| format!("\"{n}\""))
                        ),
                    });
                }
            }
            for miss in &i.near_misses {
                if i.matches(&canonical(miss)) {
                    issues.push(ContentIssue {
                        location: i.location.clone(),
                        message: format!("intent \"{}\": near miss \"{miss}\" triggers it", i.name),
                    });
                }
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ContentErrors(issues).into())
        }
    }

    /// The highest-priority intent matching `message`, with its slots filled.
    pub fn classify(&self, message: &str, today: Date) -> Option<IntentMatch> {
        let text = canonical(message);
        if text.is_empty() {
            return None;
        }
        let intent = self.intents.iter().find(|i| i.matches(&text))?;
        let slots = intent
            .slots
            .iter()
            .filter_map(|(name, kind)| extract(*kind, &text, today).map(|v| (name.clone(), v)))
            .collect();
        Some(IntentMatch {
            name: intent.name.clone(),
            action: intent.action,
            auth: intent.auth,
            slots,
        })
    }

    /// [`IntentSet::classify`] for chat: an account action (`auth = "verified"`) is not
    /// taken for a message that names one of `out_of_scope` (the knowledge base's
    /// `outofscope.txt` words, in [`search_form`]). 健身房会员卡里的余额能退吗 asks about a
    /// gym's card, not the bank balance: it goes to retrieval, which falls back for it as
    /// for any message naming such a word. Service intents still apply (花呗的事转人工
    /// hands off). The highest-priority match is the only one considered, so a suppressed
    /// action never lets a lower intent claim the message.
    pub fn classify_in_scope(
        &self,
        message: &str,
        today: Date,
        out_of_scope: &[String],
    ) -> Option<IntentMatch> {
        let m = self.classify(message, today)?;
        if m.auth == AuthLevel::Verified {
            let text = search_form(message);
            if out_of_scope.iter().any(|w| text.contains(w.as_str())) {
                return None;
            }
        }
        Some(m)
    }

    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    pub fn len(&self) -> usize {
        self.intents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    intent: Vec<Spanned<RawIntent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntent {
    name: String,
    action: Action,
    #[serde(default)]
    auth: AuthLevel,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
    #[serde(default)]
    keywords: Vec<Vec<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    slots: Vec<RawSlot>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    near_misses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    name: String,
    kind: SlotKind,
}

fn load_file(path: &Path) -> std::result::Result<Vec<Intent>, Vec<ContentIssue>> {
    let text = read_text(path).map_err(|i| vec![i])?;
    let lines = LineIndex::new(&text);
    let raw: RawFile = toml::from_str(&text).map_err(|e| vec![toml_issue(path, &lines, &e)])?;
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for spanned in raw.intent {
        let line = lines.line_of(spanned.span().start);
        let r = spanned.into_inner();
        let mut compile = |pats: Vec<Spanned<String>>| -> Vec<Regex> {
            pats.into_iter()
                .filter_map(|p| {
                    let at = lines.line_of(p.span().start);
                    let p = p.into_inner();
                    match Regex::new(&canonical_pattern(&p)) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            issues.push(ContentIssue {
                                location: Location::new(path, at, None),
                                message: format!(
                                    "intent \"{}\": pattern \"{p}\" is not a valid regular expression: {}",
                                    r.name,
                                    e.to_string().lines().last().unwrap_or("")
                                ),
                            });
                            None
                        }
                    }
                })
                .collect()
        };
        let patterns = compile(r.patterns);
        let exclude = compile(r.exclude);
        let keywords: Vec<Vec<String>> = r
            .keywords
            .into_iter()
            .map(|set| {
                set.iter()
                    .map(|k| canonical(k))
                    .filter(|k| !k.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|set| !set.is_empty())
            .collect();
        if r.name.trim().is_empty() {
            issues.push(ContentIssue {
                location: Location::new(path, line, None),
                message: "intent has an empty name".into(),
            });
        }
        if patterns.is_empty() && keywords.is_empty() {
            issues.push(ContentIssue {
                location: Location::new(path, line, None),
                message: format!(
                    "intent \"{}\" has no patterns and no keywords, so it can never match",
                    r.name
                ),
            });
        }
        out.push(Intent {
            name: r.name,
            action: r.action,
            auth: r.auth,
            priority: r.priority,
            patterns,
            keywords,
            exclude,
            slots: r.slots.into_iter().map(|s| (s.name, s.kind)).collect(),
            examples: r.examples,
            near_misses: r.near_misses,
            location: Location::new(path, line, None),
        });
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Patterns are written as editors type them; customers' text is canonicalized before
/// matching, so literal characters in patterns are too (traditional → simplified,
/// full-width → half-width). Regex syntax is ASCII and survives unchanged.
fn canonical_pattern(p: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let nfkc: String = p.nfkc().collect();
    fast2s::convert(&nfkc)
}

/// Pulls a slot value out of canonical text.
pub fn extract(kind: SlotKind, text: &str, today: Date) -> Option<SlotValue> {
    match kind {
        SlotKind::Amount => amount(text).map(SlotValue::Amount),
        SlotKind::CardTail => card_tail(text).map(SlotValue::CardTail),
        SlotKind::DateRange => {
            date_range(text, today).map(|(from, to)| SlotValue::DateRange { from, to })
        }
        SlotKind::Payee => payee(text).map(SlotValue::Payee),
    }
}

fn regex(pattern: &str) -> Regex {
    // Patterns below are literals checked by the unit tests; a typo fails every test run.
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern}: {e}"))
}

/// Amount in fen: "500元", "500块", "1.5万", "五百块", "两千", "3千元", "¥200".
fn amount(text: &str) -> Option<u64> {
    static DIGITS: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    static HAN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    // Card tails ("尾号1234") are not amounts.
    let cleaned = CARD_TAIL
        .get_or_init(card_tail_regex)
        .replace_all(text, " ");
    let digits = DIGITS.get_or_init(|| {
        regex(r"(?:¥|￥)?\s*(\d+(?:\.\d{1,2})?)\s*(万|w|千|k)?\s*(元|块|rmb|人民币)?")
    });
    for c in digits.captures_iter(&cleaned) {
        let has_unit = c.get(2).is_some()
            || c.get(3).is_some()
            || c.get(0)
                .is_some_and(|m| m.as_str().starts_with(['¥', '￥']));
        if !has_unit {
            continue;
        }
        let value: f64 = c.get(1)?.as_str().parse().ok()?;
        let mult = match c.get(2).map(|m| m.as_str()) {
            Some("万" | "w") => 10_000.0,
            Some("千" | "k") => 1_000.0,
            _ => 1.0,
        };
        return Some((value * mult * 100.0).round() as u64);
    }
    let han = HAN.get_or_init(|| regex(r"([零一二两三四五六七八九十百千万]+)\s*(元|块|万)"));
    let c = han.captures(&cleaned)?;
    let mut n = chinese_amount(c.get(1)?.as_str())?;
    if c.get(2).is_some_and(|m| m.as_str() == "万") && !c.get(1)?.as_str().contains('万') {
        n *= 10_000;
    }
    Some(n * 100)
}

/// 五百 → 500, 一千五百 → 1500, 一万五 → 15000, 两千三 → 2300, 十五 → 15.
fn chinese_amount(s: &str) -> Option<u64> {
    let digit = |c: char| {
        "零一二三四五六七八九"
            .chars()
            .position(|d| d == c)
            .map(|d| d as u64)
            .or((c == '两').then_some(2))
    };
    let (mut total, mut section, mut current) = (0u64, 0u64, 0u64);
    let mut last_unit = 1u64;
    for c in s.chars() {
        if let Some(d) = digit(c) {
            current = d;
            continue;
        }
        let unit = match c {
            '十' => 10,
            '百' => 100,
            '千' => 1000,
            '万' => 10_000,
            _ => return None,
        };
        if unit == 10_000 {
            total += (section + current) * unit;
            section = 0;
        } else {
            section += current.max(u64::from(unit == 10 && current == 0)) * unit;
        }
        current = 0;
        last_unit = unit;
    }
    // "一万五" means 15000, "两千三" means 2300: a trailing digit is one unit down.
    if current > 0 && last_unit >= 100 {
        current *= last_unit / 10;
    }
    let n = total + section + current;
    (n > 0).then_some(n)
}

static CARD_TAIL: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();

fn card_tail_regex() -> Regex {
    regex(
        r"(?:尾号|尾数|后四位|末四位|卡号后4位|后4位)(?:是|为)?\s*(\d{4})|(\d{4})\s*(?:结尾|尾号)",
    )
}

fn card_tail(text: &str) -> Option<String> {
    let c = CARD_TAIL.get_or_init(card_tail_regex).captures(text)?;
    c.get(1).or(c.get(2)).map(|m| m.as_str().to_owned())
}

/// Relative periods customers use: 今天, 昨天, 本月/这个月, 上个月, 最近N天/周/个月.
fn date_range(text: &str, today: Date) -> Option<(Date, Date)> {
    static RECENT: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let first_of_month = today.replace_day(1).ok()?;
    if text.contains("上个月") || text.contains("上月") {
        let last_of_prev = first_of_month.previous_day()?;
        return Some((last_of_prev.replace_day(1).ok()?, last_of_prev));
    }
    if text.contains("本月") || text.contains("这个月") || text.contains("这月") {
        return Some((first_of_month, today));
    }
    if text.contains("昨天") {
        let y = today.previous_day()?;
        return Some((y, y));
    }
    if text.contains("今天") {
        return Some((today, today));
    }
    let recent = RECENT.get_or_init(|| {
        regex(r"(?:最近|近|过去)\s*(\d+|[一二两三四五六七八九十]+)?\s*(天|日|周|星期|个月|月|年)")
    });
    let c = recent.captures(text)?;
    let n = match c.get(1) {
        None => 1,
        Some(m) => m
            .as_str()
            .parse()
            .ok()
            .or_else(|| chinese_amount(m.as_str()))?,
    };
    // Saturating: "最近100000000000000000年" is a customer's message, not a reason to panic.
    let days = match c.get(2)?.as_str() {
        "天" | "日" => n,
        "周" | "星期" => n.saturating_mul(7),
        "个月" | "月" => n.saturating_mul(30),
        _ => n.saturating_mul(365),
    };
    let days = i64::try_from(days.clamp(1, 3660)).ok()?;
    Some((today - Duration::days(days - 1), today))
}

/// "转给张三500元", "给李四转账": a 2-4 character name after 转给/给.
fn payee(text: &str) -> Option<String> {
    static PAYEE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = PAYEE.get_or_init(|| regex(r"(?:转给|转账给|汇给|打给|给)\s*([\p{Han}]{2,4}?)(?:\s|转|汇|打|\d|[零一二两三四五六七八九十百千万]+[元块]|$)"));
    let name = re.captures(text)?.get(1)?.as_str();
    let stop = ["我", "他", "她", "你", "对方", "别人", "家人", "朋友"];
    (!stop.iter().any(|s| name.starts_with(s))).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u8, d: u8) -> Date {
        Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap()
    }

    #[test]
    fn amounts_in_the_forms_customers_write() {
        for (text, fen) in [
            ("转500元给张三", 50_000),
            ("转账1.5万", 1_500_000),
            ("五百块", 50_000),
            ("两千元", 200_000),
            ("一万五千元", 1_500_000),
            ("3千块", 300_000),
            ("¥200", 20_000),
            ("还款 88.5 元", 8_850),
        ] {
            assert_eq!(amount(&canonical(text)), Some(fen), "{text}");
        }
        assert_eq!(amount("尾号1234的卡"), None);
        assert_eq!(amount("我要转账"), None);
    }

    proptest::proptest! {
        #[test]
        fn date_ranges_never_panic(text in "(最近|近|过去)([0-9]{1,25}|[一二两三四五六七八九十百千万]{1,12})(天|日|周|星期|个月|月|年)") {
            let _ = date_range(&canonical(&text), day(2026, 3, 15));
        }

        #[test]
        fn amounts_never_panic(text in "(¥)?([0-9]{1,30}(\\.[0-9]{1,2})?|[零一二两三四五六七八九十百千万]{1,40})(万|w|千|k)?(元|块)") {
            let _ = amount(&canonical(&text));
        }

        #[test]
        fn any_text_extracts_without_panic(text in ".{0,40}") {
            for kind in [SlotKind::Amount, SlotKind::CardTail, SlotKind::DateRange, SlotKind::Payee] {
                let _ = extract(kind, &canonical(&text), day(2026, 3, 15));
            }
        }
    }

    #[test]
    fn absurd_periods_and_amounts_saturate() {
        let today = day(2026, 3, 15);
        let (from, to) = date_range("最近100000000000000000年", today).unwrap();
        assert_eq!(to, today);
        assert_eq!(from, today - Duration::days(3659));
        assert!(amount("99999999999999999999999999元").is_some());
    }

    #[test]
    fn card_tails_and_payees() {
        assert_eq!(card_tail("尾号1234的卡余额"), Some("1234".into()));
        assert_eq!(card_tail("卡号后4位是5678"), Some("5678".into()));
        assert_eq!(card_tail("8888结尾的卡"), Some("8888".into()));
        assert_eq!(card_tail("余额"), None);
        assert_eq!(payee("转给张三500元"), Some("张三".into()));
        assert_eq!(payee("给李四转账"), Some("李四".into()));
        assert_eq!(payee("转给我妈"), None);
    }

    #[test]
    fn date_ranges_relative_to_today() {
        let today = day(2026, 3, 15);
        assert_eq!(
            date_range("上个月的明细", today),
            Some((day(2026, 2, 1), day(2026, 2, 28)))
        );
        assert_eq!(
            date_range("本月账单", today),
            Some((day(2026, 3, 1), today))
        );
        assert_eq!(date_range("最近7天", today), Some((day(2026, 3, 9), today)));
        assert_eq!(
            date_range("近三个月", today),
            Some((day(2025, 12, 16), today))
        );
        assert_eq!(
            date_range("昨天", today),
            Some((day(2026, 3, 14), day(2026, 3, 14)))
        );
        assert_eq!(
            date_range("上个月", day(2026, 1, 10)),
            Some((day(2025, 12, 1), day(2025, 12, 31)))
        );
        assert_eq!(date_range("余额", today), None);
    }

    fn write(dir: &Path, body: &str) {
        std::fs::write(dir.join("a.toml"), body).unwrap();
    }

    #[test]
    fn an_account_action_is_not_taken_for_another_companys_thing() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            r#"
[[intent]]
name = "balance"
action = "balance"
auth = "verified"
patterns = ["余额"]

[[intent]]
name = "handoff"
action = "handoff"
patterns = ["转人工"]
"#,
        );
        let set = IntentSet::load_dir(dir.path()).unwrap();
        let today = day(2026, 1, 1);
        let foreign = vec!["健身房".to_string(), "花呗".to_string()];
        let name = |m: Option<IntentMatch>| m.map(|m| m.name);
        assert_eq!(
            name(set.classify_in_scope("卡里余额多少", today, &foreign)).as_deref(),
            Some("balance")
        );
        // Traditional script is folded before the comparison.
        assert_eq!(
            name(set.classify_in_scope("健身房會員卡裡的余額能退嗎", today, &foreign)),
            None
        );
        // Only account actions give way: a hand-off request still hands off.
        assert_eq!(
            name(set.classify_in_scope("花呗的事转人工", today, &foreign)).as_deref(),
            Some("handoff")
        );
        // Without out-of-scope words nothing changes.
        assert_eq!(
            name(set.classify_in_scope("健身房会员卡余额", today, &[])).as_deref(),
            Some("balance")
        );
    }

    #[test]
    fn rule_files_are_checked_with_their_own_examples() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            r#"
[[intent]]
name = "transfer"
action = "transfer"
auth = "verified"
patterns = ["转账", "转给"]
exclude = ["限额"]
examples = ["我要转账"]
near_misses = ["转账限额是多少"]
slots = [{ name = "amount", kind = "amount" }]
"#,
        );
        let set = IntentSet::load_dir(dir.path()).unwrap();
        let m = set.classify("轉賬１０００元", day(2026, 1, 1)).unwrap();
        assert_eq!(m.action, Action::Transfer);
        assert_eq!(m.slots, vec![("amount".into(), SlotValue::Amount(100_000))]);
        assert!(set.classify("转账限额是多少", day(2026, 1, 1)).is_none());

        write(dir.path(), "[[intent]]\nname = \"t\"\naction = \"transfer\"\npatterns = [\"转账\"]\nnear_misses = [\"转账限额是多少\"]\n");
        let err = IntentSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("a.toml:1: intent \"t\": near miss \"转账限额是多少\" triggers it"),
            "{err}"
        );

        write(
            dir.path(),
            "[[intent]]\nname = \"t\"\naction = \"transfer\"\n\npatterns = [\"转(账\"]\n",
        );
        let err = IntentSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(
                "a.toml:5: intent \"t\": pattern \"转(账\" is not a valid regular expression"
            ),
            "{err}"
        );

        write(
            dir.path(),
            "[[intent]]\nname = \"t\"\naction = \"fly\"\npatterns = [\"x\"]\n",
        );
        let err = IntentSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("a.toml:3: invalid TOML: unknown variant `fly`"),
            "{err}"
        );
    }
}
