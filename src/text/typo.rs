//! Homophone typo repair against the knowledge base's own vocabulary.
//!
//! Pinyin input methods make customers pick the wrong character of the right sound:
//! 密马 for 密码, 激或 for 激活, 挂矢 for 挂失. Such a typo breaks the word for jieba, the
//! character bigram for the gram features and the topic check, so the right entry loses
//! everything but one shared character. The repair is deliberately narrow: a character
//! pair of the question that occurs in no knowledge-base question and is no dictionary
//! word, whose pinyin (toneless) is that of a pair that does occur and *is* a word, with
//! exactly one character different, is replaced by that pair. A pair the knowledge base
//! knows, or any real word (试试, 以前), is never touched.
//!
//! Why the dictionary checks: without them, on the bq question set (4,818 questions of
//! another bank) one query in six was "corrected", mostly wrongly (试试 → 十是, 以前 →
//! 一前), because a large knowledge base has a homophone pair for almost anything.

use std::collections::HashMap;

use pinyin::ToPinyin;

/// Toneless pinyin of one CJK character (the most common reading), if it has one.
fn sound(c: char) -> Option<&'static str> {
    c.to_pinyin().map(|p| p.plain())
}

/// Two characters side by side, and their two toneless readings.
type Pair = (char, char);
type Sounds = (&'static str, &'static str);

/// Known character pairs of a knowledge base and, per sound pair, the most frequent
/// of them.
#[derive(Debug, Clone, Default)]
pub struct Corrector {
    /// Every pair of the knowledge base's questions, with how often it occurs.
    known: HashMap<Pair, u32>,
    by_sound: HashMap<Sounds, Pair>,
}

impl Corrector {
    /// Learns the pairs of `texts`, each already in [`super::search_form`]; only pairs
    /// for which `is_word` holds can be the repair.
    pub fn new<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        is_word: impl Fn(&str) -> bool,
    ) -> Self {
        let mut counts: HashMap<(char, char), u32> = HashMap::new();
        for t in texts {
            let chars: Vec<char> = t.chars().collect();
            for w in chars.windows(2) {
                if sound(w[0]).is_some() && sound(w[1]).is_some() {
                    *counts.entry((w[0], w[1])).or_default() += 1;
                }
            }
        }
        let mut by_sound: HashMap<Sounds, (Pair, u32)> = HashMap::new();
        for (&pair, &n) in &counts {
            let (Some(a), Some(b)) = (sound(pair.0), sound(pair.1)) else {
                continue;
            };
            if !is_word(&String::from_iter([pair.0, pair.1])) {
                continue;
            }
            let slot = by_sound.entry((a, b)).or_insert((pair, n));
            // Most frequent wins; ties go to the smaller pair so every build agrees.
            if n > slot.1 || (n == slot.1 && pair < slot.0) {
                *slot = (pair, n);
            }
        }
        Corrector {
            known: counts,
            by_sound: by_sound.into_iter().map(|(k, (p, _))| (k, p)).collect(),
        }
    }

    /// `normalized` with homophone typos repaired (see the module comment); `None` if
    /// nothing changed, so the common case allocates nothing.
    /// `is_word` says whether a pair is a real word (and so no typo).
    pub fn correct(&self, normalized: &str, is_word: impl Fn(&str) -> bool) -> Option<String> {
        if self.known.is_empty() {
            return None;
        }
        let mut chars: Vec<char> = normalized.chars().collect();
        let mut changed = false;
        for i in 1..chars.len() {
            let pair = (chars[i - 1], chars[i]);
            if self.known.contains_key(&pair) || is_word(&String::from_iter([pair.0, pair.1])) {
                continue;
            }
            let (Some(a), Some(b)) = (sound(pair.0), sound(pair.1)) else {
                continue;
            };
            let Some(&fix) = self.by_sound.get(&(a, b)) else {
                continue;
            };
            // Exactly one character differs: two wrong characters is a different word.
            if (fix.0 == pair.0) != (fix.1 == pair.1) {
                // The replaced character must not break a better pair on its other side:
                // 有危险 must not become 有违险 because 有违 is a word, and 跨行是不是 must
                // not become 跨行使不是 because 行使 is one, though 使不 occurs too.
                let breaks = |kept: (char, char), made: (char, char)| {
                    self.pair_weight(kept, &is_word) > self.pair_weight(made, &is_word)
                };
                let breaks_before = fix.0 != pair.0
                    && i >= 2
                    && breaks((chars[i - 2], pair.0), (chars[i - 2], fix.0));
                let breaks_after = fix.1 != pair.1
                    && i + 1 < chars.len()
                    && breaks((pair.1, chars[i + 1]), (fix.1, chars[i + 1]));
                // Nor may it take the kept character from a word it already makes on its
                // other side, unless the new character also pairs with its own other
                // neighbour as the knowledge base writes it: 我是去年办的 has no typo,
                // though 是去 is no word and 失去 sounds the same (去 belongs to 去年, and
                // no question says 我失); 手续废多少 is repaired to 手续费多少 although 多
                // belongs to 多少, because 续费 occurs.
                let (kept_other, made_other) = if fix.0 == pair.0 {
                    (
                        (i >= 2).then(|| (chars[i - 2], pair.0)),
                        chars.get(i + 1).map(|&n| (fix.1, n)),
                    )
                } else {
                    (
                        chars.get(i + 1).map(|&n| (pair.1, n)),
                        (i >= 2).then(|| (chars[i - 2], fix.0)),
                    )
                };
                let kept_in_word = kept_other
                    .is_some_and(|(a, b)| is_word(&String::from_iter([a, b])))
                    && made_other.is_none_or(|m| self.pair_weight(m, &is_word) == 0);
                if breaks_before || breaks_after || kept_in_word {
                    continue;
                }
                chars[i - 1] = fix.0;
                chars[i] = fix.1;
                changed = true;
            }
        }
        changed.then(|| chars.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// How good a pair is: how often the knowledge base's questions use it, and one
    /// more if it is a dictionary word.
    fn pair_weight(&self, pair: Pair, is_word: impl Fn(&str) -> bool) -> u64 {
        let seen = u64::from(self.known.get(&pair).copied().unwrap_or(0));
        seen + u64::from(is_word(&String::from_iter([pair.0, pair.1])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &[&str] = &["密码", "激活", "转账", "限额", "天气", "忘记"];

    fn is_word(w: &str) -> bool {
        WORDS.contains(&w)
    }

    fn corrector() -> Corrector {
        Corrector::new(
            [
                "忘记密码怎么办",
                "银行卡怎么激活",
                "转账限额是多少",
                "跨行转账手续费",
            ],
            is_word,
        )
    }

    #[test]
    fn homophone_typos_become_the_known_pair() {
        let c = corrector();
        assert_eq!(c.correct("密马忘了", is_word).as_deref(), Some("密码忘了"));
        assert_eq!(
            c.correct("新卡怎么激或", is_word).as_deref(),
            Some("新卡怎么激活")
        );
        assert_eq!(c.correct("转帐限额", is_word).as_deref(), Some("转账限额"));
    }

    #[test]
    fn known_text_and_unrelated_text_stay_as_they_are() {
        let c = corrector();
        assert_eq!(c.correct("忘记密码怎么办", is_word), None);
        assert_eq!(c.correct("今天天气真好", is_word), None);
        assert_eq!(c.correct("abc 123", is_word), None);
        // A real word is no typo even when the knowledge base lacks it: 记密 is not
        // known, but here 忘记 stands for any dictionary word.
        assert_eq!(c.correct("密码忘记", is_word), None);
        assert_eq!(Corrector::default().correct("密马", is_word), None);
    }

    #[test]
    fn a_repair_never_breaks_a_more_common_pair_beside_it() {
        // 行使 is a word the knowledge base uses once; 行是 is neither. Repairing it
        // would turn 是不是 into 使不是, though 使不 occurs too: 是不 is far more common.
        let words = |w: &str| ["行使", "跨行", "转账", "是不是"].contains(&w);
        let c = Corrector::new(
            [
                "依法行使权利",
                "使不了怎么办",
                "跨行转账是不是免费",
                "是不是要收费",
                "是不是到账了",
            ],
            words,
        );
        assert_eq!(c.correct("跨行是不是免费的", words), None);
        // The same pair with nothing better beside it is still repaired.
        assert_eq!(c.correct("行是权利", words).as_deref(), Some("行使权利"));
    }

    #[test]
    fn a_repair_never_takes_a_character_from_the_word_it_makes_on_its_other_side() {
        // 是去 is no word and 失去 sounds the same, but 去 belongs to 去年 and no question
        // says 我失. (费多 is a name in jieba's dictionary, so it can be a repair.)
        let words = |w: &str| ["失去", "去年", "多少", "手续", "费多"].contains(&w);
        let c = Corrector::new(["失去联系怎么办", "手续费多少"], words);
        assert_eq!(c.correct("我是去年办的", words), None);
        // Without 去年 beside it the same pair is repaired.
        assert_eq!(
            c.correct("我是去联系", words).as_deref(),
            Some("我失去联系")
        );
        // 多 belongs to 多少, but the new 费 pairs with 续 as the questions write it.
        assert_eq!(
            c.correct("手续废多少", words).as_deref(),
            Some("手续费多少")
        );
    }
}
