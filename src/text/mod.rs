//! The text pipeline: the one place that decides how a customer's message and a
//! knowledge-base question become comparable.
//!
//! Customers type full-width digits from Chinese IMEs, traditional characters from
//! Hong Kong or Taiwan keyboards, emoji, and stray punctuation. Everything that compares
//! text (the index, the re-ranker, intent rules, menu picks) goes through [`canonical`]
//! or [`search_form`] first, so a fix here fixes every consumer at once.

pub mod typo;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jieba_rs::Jieba;
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use unicode_normalization::UnicodeNormalization;

/// NFKC (full-width → half-width), traditional → simplified, lower case, and removal of
/// symbols that carry no meaning (emoji, dingbats, variation selectors). Punctuation is
/// kept because intent slots ("1.5万", "尾号1234") need it; whitespace is collapsed.
pub fn canonical(input: &str) -> String {
    let nfkc: String = input.nfkc().collect();
    let simplified = fast2s::convert(&nfkc);
    let mut out = String::with_capacity(simplified.len());
    let mut pending_space = false;
    for c in simplified.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if !(c.is_alphanumeric() || is_punctuation(c)) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// [`canonical`] with every punctuation mark turned into a word break: the form that
/// retrieval and similarity work on. "信用卡，丢了！！" and "信用卡 丢了" are the same query.
pub fn search_form(input: &str) -> String {
    let canon = canonical(input);
    let mut out = String::with_capacity(canon.len());
    for c in canon.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with(' ') && !out.is_empty() {
            out.push(' ');
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32,
            0x2010..=0x2027   // dashes, quotes, ellipsis
            | 0x3001..=0x3003 // 、。〃
            | 0x3008..=0x3011 // 《》「」【】
            | 0x3014..=0x301F
            | 0xFF01..=0xFF0F // full-width forms NFKC leaves alone are rare, keep them safe
            | 0xFF1A..=0xFF20)
        || matches!(c, '¥' | '￥' | '·' | '°')
}

/// See [`Analyzer::is_word`].
pub const COMMON_WORD_FREQ: usize = 20;

/// Words that occur in nearly every customer question and carry no topic. Dropping
/// them keeps word-overlap features from rewarding "我的…吗" matches.
const STOPWORDS: &[&str] = &[
    "的", "了", "吗", "呢", "啊", "吧", "呀", "哦", "嗯", "么", "嘛", "哈", "啦", "哎", "诶", "额",
    "请问", "你好", "您好", "亲", "谢谢", "麻烦", "一下", "我", "我的", "你", "你们", "您", "是",
    "在", "要", "想", "就", "都", "还是", "这个", "那个", "这", "那", "把", "被", "给", "和", "与",
    "及", "或", "也", "又", "吧", "呐", "咯", "喔", "哟",
];

/// Words that make a sentence a question but say nothing about its topic. Kept in the
/// index (they help ranking near-identical phrasings) but never enough, alone, to call
/// two questions related.
const QUESTION_WORDS: &[&str] = &[
    "怎么",
    "怎么办",
    "怎样",
    "怎么样",
    "如何",
    "什么",
    "是什么",
    "为什么",
    "为啥",
    "啥",
    "咋",
    "咋办",
    "咋整",
    "多少",
    "多久",
    "多长时间",
    "哪里",
    "哪儿",
    "在哪",
    "在哪里",
    "哪个",
    "哪些",
    "几",
    "可以",
    "能",
    "能不能",
    "可不可以",
    "是不是",
    "有没有",
    "会不会",
    "要不要",
    "需要",
    "有",
    "没有",
    "不",
    "办",
    "弄",
    "怎么弄",
    // "Is there a way" asks; the way is the topic's, not a topic of its own
    // (额度老是不涨有啥办法 must not share a topic with a luggage lock).
    "办法",
    "方法",
    // "What does it mean" asks about whatever the message names (一类户二类户是啥意思).
    "意思",
    "啥意思",
    "什么意思",
    "是啥意思",
    "是什么意思",
    // "What is going on" and "have a look" ask about whatever the message names:
    // 能不能帮我看看怎么回事 is no topic of 满减没减怎么回事.
    "怎么回事",
    "回事",
    "咋回事",
    "哪能回事",
    "看看",
    "帮我看看",
    "帮忙",
    "不能",
    "做",
    "还",
    "会",
    "吗",
    "呢",
    "了",
    "请",
    "帮",
    "帮我",
    "一下",
    "告诉",
    "知道",
    "问",
    "问问",
    "想问",
    "这",
    "那",
    "哪",
    "多",
    "该",
    "应该",
    "今天",
    "现在",
    "最近",
    "目前",
    "一般",
    "平时",
];

pub fn is_question_word(word: &str) -> bool {
    QUESTION_WORDS.contains(&word) || STOPWORDS.contains(&word)
}

/// Synonym groups from `knowledge-base/synonyms.txt`: every word maps to its group's
/// first (canonical) word, at index time and at query time alike, so "还钱" finds
/// questions written with "还款".
#[derive(Debug, Clone, Default)]
pub struct Synonyms {
    canonical_of: HashMap<String, String>,
}

impl Synonyms {
    /// Builds the map from groups whose first word is the canonical form.
    pub fn from_groups<I, G, S>(groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut canonical_of = HashMap::new();
        for group in groups {
            let mut words = group.into_iter().map(|w| search_form(w.as_ref()));
            let Some(head) = words.next() else { continue };
            for w in words {
                if !w.is_empty() && w != head {
                    canonical_of.insert(w, head.clone());
                }
            }
        }
        Synonyms { canonical_of }
    }

    pub fn canonical<'a>(&'a self, word: &'a str) -> &'a str {
        self.canonical_of
            .get(word)
            .map(String::as_str)
            .unwrap_or(word)
    }

    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.canonical_of
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()])
    }

    pub fn len(&self) -> usize {
        self.canonical_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.canonical_of.is_empty()
    }
}

/// A user-dictionary word for jieba (`词 词频 词性`).
#[derive(Debug, Clone)]
pub struct DictWord {
    pub word: String,
    pub freq: Option<usize>,
    pub tag: Option<String>,
}

/// Segmentation shared by the index, the re-ranker and the similarity function.
///
/// Cloning is cheap: tantivy clones its tokenizers for every query, and one jieba
/// dictionary (several MB) must not be copied each time.
#[derive(Clone)]
pub struct Analyzer {
    inner: Arc<AnalyzerInner>,
}

struct AnalyzerInner {
    jieba: Jieba,
    synonyms: Synonyms,
    stopwords: HashSet<&'static str>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("synonyms", &self.inner.synonyms.len())
            .finish_non_exhaustive()
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(&[], Synonyms::default())
    }
}

impl Analyzer {
    pub fn new(user_words: &[DictWord], synonyms: Synonyms) -> Self {
        let mut jieba = Jieba::new();
        for w in user_words {
            let word = search_form(&w.word);
            if !word.is_empty() && !word.contains(' ') {
                jieba.add_word(&word, w.freq, w.tag.as_deref());
            }
        }
        // A synonym only maps if jieba keeps it whole, so every synonym joins the dictionary.
        let syn_words: Vec<String> = synonyms
            .words()
            .filter(|w| w.chars().count() > 1 && !w.contains(' '))
            .map(str::to_owned)
            .collect();
        for w in syn_words {
            jieba.add_word(&w, None, None);
        }
        Analyzer {
            inner: Arc::new(AnalyzerInner {
                jieba,
                synonyms,
                stopwords: STOPWORDS.iter().copied().collect(),
            }),
        }
    }

    /// Content words of already-normalized text (see [`search_form`]): jieba words with
    /// stopwords dropped and synonyms mapped to their canonical form.
    pub fn words(&self, normalized: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.each_word(normalized, |w, _, _| out.push(w.to_owned()));
        out
    }

    /// [`Analyzer::words`] and the text's *synonym form*, from one jieba cut. The synonym
    /// form is the text with every word of a synonym group replaced by the group's
    /// canonical word (stopwords and spaces kept). The character features compare this
    /// form on both sides, so 密码唔记得了咋个办 and 密码忘记了怎么办 share their characters: without
    /// it a synonym group helps only the word features, and the band's similarity is
    /// mostly character overlap (see `retrieval::Weights::similarity_default`). On the tune
    /// half of `eval/customer-messages.tsv` this is what lets regional and colloquial
    /// wording reach the answer band (see `docs/answer-quality.md`).
    pub fn words_and_synonym_form(&self, normalized: &str) -> (Vec<String>, String) {
        let mut words = Vec::new();
        let mut form = String::with_capacity(normalized.len());
        for token in self.inner.jieba.cut(normalized, true) {
            let word = self.inner.synonyms.canonical(token.word);
            form.push_str(word);
            if !token.word.trim().is_empty() && !self.inner.stopwords.contains(token.word) {
                words.push(word.to_owned());
            }
        }
        (words, form)
    }

    fn each_word(&self, normalized: &str, mut f: impl FnMut(&str, usize, usize)) {
        for token in self.inner.jieba.cut(normalized, true) {
            let word = token.word;
            if word.trim().is_empty() || self.inner.stopwords.contains(word) {
                continue;
            }
            let word = self.inner.synonyms.canonical(word);
            f(word, token.byte_start, token.byte_start + token.word.len());
        }
    }

    /// Whether `word` is a common word: in jieba's dictionary (with the user dictionary
    /// and synonyms) with a frequency of at least [`COMMON_WORD_FREQ`]. jieba's
    /// dictionary also lists rare words that are mostly typos in customer messages
    /// (冻洁 has frequency 3; 冻结 has 1,398).
    pub fn is_word(&self, word: &str) -> bool {
        self.inner.jieba.has_word(word) && self.inner.jieba.suggest_freq(word) >= COMMON_WORD_FREQ
    }

    pub fn synonyms(&self) -> &Synonyms {
        &self.inner.synonyms
    }

    /// Whether jieba's dictionary tags `word` as a word that carries no topic: an adverb
    /// (突然, 已经, 一直), a pronoun, a conjunction, a preposition, a particle or an
    /// interjection (time words are not among them: see [`FUNCTION_TAGS`]). "我家的猫突然不吃猫粮了怎么办" shares only 突然 with
    /// "储蓄卡突然用勿了哪能办", and must not count as on its topic.
    pub fn is_function_word(&self, word: &str) -> bool {
        self.has_tag_among(word, FUNCTION_TAGS)
    }

    /// Whether `word` can mark what a negative question is about (see
    /// `retrieval::Negative`): not a function word, a numeral or measure word (几次,
    /// 一阵子), a locality word or a time word (jieba tags 上去 as one, and 登不上去 says
    /// nothing 登不上 does not). Time words that name a bank topic (逾期) are lost as marks;
    /// a negative that needs one still works the old way, by being the closer wording.
    pub fn can_mark(&self, word: &str) -> bool {
        self.only_tag(word)
            .is_none_or(|t| !FUNCTION_TAGS.contains(&t) && !["m", "q", "f", "t"].contains(&t))
    }

    fn has_tag_among(&self, word: &str, tags: &[&str]) -> bool {
        self.only_tag(word).is_some_and(|t| tags.contains(&t))
    }

    /// jieba's part-of-speech tag of `word` when jieba keeps it as one word (one lookup).
    fn only_tag<'a>(&'a self, word: &'a str) -> Option<&'a str> {
        match self.inner.jieba.tag(word, false).as_slice() {
            [only] => Some(only.tag),
            _ => None,
        }
    }
}

/// jieba part-of-speech tags of words that name no topic (see [`Analyzer::is_function_word`]).
/// Time words (`t`) are not among them: jieba tags 逾期, 周末 and 节假日 as time words,
/// and each names a bank topic. Measured on the tuning sets (tune half, calibration,
/// blind3 to blind9): two more out-of-scope messages of the ninth set fall back
/// (我家的猫突然不吃猫粮了怎么办 had been answered with a card entry), nothing else changed
/// what is answered or seen; with `t` as well, 逾其了一个星期怎么办 lost its list.
const FUNCTION_TAGS: &[&str] = &["d", "ad", "r", "c", "p", "u", "y", "e", "o"];

/// Character units of normalized text: each CJK character is a unit, a run of ASCII
/// letters or digits is one unit ("3000", "app"). Spaces break bigrams.
pub fn char_units(normalized: &str) -> Vec<Vec<String>> {
    let mut chunks = Vec::new();
    for chunk in normalized.split(' ').filter(|c| !c.is_empty()) {
        let mut units: Vec<String> = Vec::new();
        let mut ascii_run = String::new();
        for c in chunk.chars() {
            if c.is_ascii_alphanumeric() {
                ascii_run.push(c);
            } else {
                if !ascii_run.is_empty() {
                    units.push(std::mem::take(&mut ascii_run));
                }
                units.push(c.to_string());
            }
        }
        if !ascii_run.is_empty() {
            units.push(ascii_run);
        }
        chunks.push(units);
    }
    chunks
}

/// Unigrams and bigrams of [`char_units`]: robust to segmentation mistakes and typos
/// that jieba turns into different words ("微粒货" still shares "微粒").
pub fn char_grams(normalized: &str) -> Vec<String> {
    let mut out = Vec::new();
    for units in char_units(normalized) {
        for (i, u) in units.iter().enumerate() {
            out.push(u.clone());
            if let Some(next) = units.get(i + 1) {
                out.push(format!("{u}{next}"));
            }
        }
    }
    out
}

/// Tantivy tokenizer over jieba words. The text given to tantivy is raw; the adapter
/// normalizes it so index and query pass through exactly the same pipeline.
#[derive(Clone)]
pub struct JiebaTokenizer {
    analyzer: Analyzer,
}

impl JiebaTokenizer {
    pub const NAME: &'static str = "kefu_jieba";

    pub fn new(analyzer: Analyzer) -> Self {
        JiebaTokenizer { analyzer }
    }
}

impl Tokenizer for JiebaTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let normalized = search_form(text);
        let mut tokens = Vec::new();
        self.analyzer.each_word(&normalized, |w, from, to| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text: w.to_owned(),
                position_length: 1,
            })
        });
        VecTokenStream::new(tokens)
    }
}

/// Tantivy tokenizer over character unigrams and bigrams (see [`char_grams`]).
#[derive(Clone, Default)]
pub struct CharGramTokenizer;

impl CharGramTokenizer {
    pub const NAME: &'static str = "kefu_chargram";
}

impl Tokenizer for CharGramTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let tokens = char_grams(&search_form(text))
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token {
                offset_from: 0,
                offset_to: 0,
                position,
                text,
                position_length: 1,
            })
            .collect();
        VecTokenStream::new(tokens)
    }
}

/// Tokens computed up front: segmentation needs the whole text anyway.
pub struct VecTokenStream {
    tokens: Vec<Token>,
    cursor: usize,
}

impl VecTokenStream {
    fn new(tokens: Vec<Token>) -> Self {
        VecTokenStream { tokens, cursor: 0 }
    }
}

impl TokenStream for VecTokenStream {
    fn advance(&mut self) -> bool {
        if self.cursor < self.tokens.len() {
            self.cursor += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.cursor - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.cursor - 1]
    }
}

/// Reads a customer's pick from a numbered list: `2`, `２`, `二`, `第二个`, `2.`,
/// `选2`, `第2条`. Returns the 1-based number, or `None` if the message is not a pick.
pub fn parse_choice(message: &str) -> Option<usize> {
    let text = canonical(message);
    let mut s = text.trim();
    for prefix in ["我选", "选择", "选", "第"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim_start();
        }
    }
    for suffix in [".", "。", "、", ")", "号", "个", "条", "项", "题", "问题"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            s = rest.trim_end();
        }
    }
    if s.is_empty() {
        return None;
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse().ok().filter(|n| (1..=99).contains(n));
    }
    chinese_number(s)
}

/// Chinese numerals from 一 to 九十九 (menus never get longer).
fn chinese_number(s: &str) -> Option<usize> {
    fn digit(c: char) -> Option<usize> {
        "零一二三四五六七八九"
            .chars()
            .position(|d| d == c)
            .or(if c == '两' { Some(2) } else { None })
    }
    let chars: Vec<char> = s.chars().collect();
    let n = match chars.as_slice() {
        ['十'] => 10,
        [d] => digit(*d)?,
        ['十', u] => 10 + digit(*u)?,
        [t, '十'] => digit(*t)? * 10,
        [t, '十', u] => digit(*t)? * 10 + digit(*u)?,
        _ => return None,
    };
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn adverbs_and_pronouns_name_no_topic_but_bank_time_words_do() {
        let a = super::Analyzer::default();
        for w in ["突然", "已经", "一直", "自己", "可以"] {
            assert!(a.is_function_word(w), "{w}");
        }
        for w in ["逾期", "周末", "节假日", "信用卡", "挂失", "猫粮"] {
            assert!(!a.is_function_word(w), "{w}");
        }
    }

    use super::*;

    #[test]
    fn canonical_folds_width_case_script_and_emoji() {
        assert_eq!(canonical("ＡＢＣ１２３"), "abc123");
        assert_eq!(canonical("信用卡遺失了怎麼辦"), "信用卡遗失了怎么办");
        assert_eq!(canonical("  余额\t\n查询  "), "余额 查询");
        assert_eq!(canonical("转账😀👍🏻"), "转账");
        assert_eq!(canonical("👍🏻🎉"), "");
        assert_eq!(canonical("1.5万"), "1.5万");
    }

    #[test]
    fn search_form_turns_punctuation_into_breaks() {
        assert_eq!(
            search_form("信用卡，丢了！！怎么办？"),
            "信用卡 丢了 怎么办"
        );
        assert_eq!(search_form("？？？"), "");
        assert_eq!(search_form(""), "");
    }

    #[test]
    fn choices_in_every_form_customers_type() {
        for (input, n) in [
            ("1", 1),
            ("１", 1),
            ("一", 1),
            ("第一个", 1),
            ("1.", 1),
            ("２", 2),
            ("第二个", 2),
            ("第2条", 2),
            ("选3", 3),
            (" 3 ", 3),
            ("十二", 12),
            ("两", 2),
        ] {
            assert_eq!(parse_choice(input), Some(n), "{input}");
        }
        for input in ["", "0", "第", "我要转账", "123456", "一二", "1 2"] {
            assert_eq!(parse_choice(input), None, "{input}");
        }
    }

    #[test]
    fn analyzer_maps_synonyms_and_drops_stopwords() {
        let syn = Synonyms::from_groups([vec!["还款", "还钱"]]);
        let a = Analyzer::new(&[], syn);
        let words = a.words(&search_form("我的信用卡怎么还钱呢"));
        assert!(words.contains(&"还款".to_owned()), "{words:?}");
        assert!(!words.iter().any(|w| w == "的" || w == "呢" || w == "我的"));
    }

    #[test]
    fn synonym_form_rewrites_dialect_words_and_keeps_the_rest() {
        let syn = Synonyms::from_groups([vec!["怎么办", "咋个办", "点算"], vec!["忘记", "唔记得"]]);
        let a = Analyzer::new(&[], syn);
        let (words, form) = a.words_and_synonym_form(&search_form("密码唔记得了咋个办"));
        assert_eq!(form, "密码忘记了怎么办");
        assert_eq!(words, a.words(&search_form("密码唔记得了咋个办")));
        let (_, form) = a.words_and_synonym_form(&search_form("張卡點算 好"));
        assert_eq!(form, "张卡怎么办 好");
        // No synonyms: the text is unchanged, so bq (which has none) ranks as before.
        let plain = Analyzer::default();
        let text = search_form("信用卡 丢了 怎么办abc 123");
        assert_eq!(plain.words_and_synonym_form(&text).1, text);
    }

    #[test]
    fn user_dictionary_keeps_product_names_whole() {
        let a = Analyzer::new(
            &[DictWord {
                word: "掌上银行".into(),
                freq: Some(3000),
                tag: Some("n".into()),
            }],
            Synonyms::default(),
        );
        assert!(a.words("掌上银行怎么登录").contains(&"掌上银行".to_owned()));
    }

    #[test]
    fn char_grams_mix_cjk_and_ascii_units() {
        assert_eq!(char_grams("借3000 元"), vec!["借", "借3000", "3000", "元"]);
    }

    #[test]
    fn tokenizers_survive_hostile_input() {
        let mut t = JiebaTokenizer::new(Analyzer::default());
        for s in ["", "😀", "\u{0}\u{7}", &"啊".repeat(10_000), "\u{202e}abc"] {
            let mut stream = t.token_stream(s);
            while stream.advance() {}
        }
    }
}
