//! Masking of personal data before anything is stored, logged or shown to an agent.
//!
//! Banks show card numbers as first-4 + last-4 and phone numbers as 3 + 4; ID numbers
//! hide the birth date. Masking happens at the store boundary, so no transcript, event
//! or log line ever holds the full number, whatever channel it came from.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Order matters: an ID number (17 digits + check char) before a bare digit run.
        // Digit runs may be grouped by spaces or dashes, as people type card numbers.
        Regex::new(
            r"(?x)
            (?P<id>(?-u:\b)[0-9]{6}[\s-]{0,3}(?:19|20)[0-9]{2}[\s-]{0,3}(?:0[1-9]|1[0-2])[\s-]{0,3}(?:0[1-9]|[12][0-9]|3[01])[\s-]{0,3}[0-9]{3}[[0-9]Xx](?-u:\b))
          | (?P<card>(?-u:\b)[0-9]{4}(?:[\s-]{0,3}[0-9]){9,15}(?-u:\b))
          | (?P<phone>(?-u:\b)1[3-9][0-9](?:[\s-]{0,3}[0-9]){8}(?-u:\b))
            ",
        )
        .unwrap_or_else(|e| panic!("built-in masking pattern: {e}"))
    })
}

/// Dashes people type between digit groups: full-width, en/em dash, hyphen.
const DASHES: [char; 5] = ['－', '—', '–', '‐', '‑'];

/// Returns `text` with card, ID and mobile numbers masked.
pub fn mask(text: &str) -> Cow<'_, str> {
    // Full-width digits and dashes from Chinese IMEs are numbers too ("６２２２－０２００…");
    // fold them so they get masked.
    let foldable = |c: char| ('０'..='９').contains(&c) || DASHES.contains(&c);
    if text.chars().any(foldable) {
        let folded: String = text
            .chars()
            .map(|c| match c {
                '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
                c if DASHES.contains(&c) => '-',
                other => other,
            })
            .collect();
        return Cow::Owned(mask_ascii(&folded).into_owned());
    }
    mask_ascii(text)
}

fn mask_ascii(text: &str) -> Cow<'_, str> {
    pattern().replace_all(text, |c: &Captures<'_>| {
        // Separators typed between the groups are dropped from the masked form.
        let digits = |m: regex::Match<'_>| -> String {
            m.as_str()
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == 'X' || *c == 'x')
                .collect()
        };
        if let Some(m) = c.name("id") {
            let s = digits(m);
            format!("{}********{}", &s[..6], &s[14..])
        } else if let Some(m) = c.name("card") {
            let digits = digits(m);
            let n = digits.len();
            format!("{}{}{}", &digits[..4], "*".repeat(n - 8), &digits[n - 4..])
        } else if let Some(m) = c.name("phone") {
            let s = digits(m);
            format!("{}****{}", &s[..3], &s[7..])
        } else {
            c[0].to_owned()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cards_ids_and_phones() {
        assert_eq!(mask("卡号6222021234567890123"), "卡号6222***********0123");
        assert_eq!(mask("6222 0212 3456 7890"), "6222********7890");
        assert_eq!(mask("身份证110101199003071234"), "身份证110101********1234");
        assert_eq!(
            mask("身份证 11010119900307123X"),
            "身份证 110101********123X"
        );
        assert_eq!(mask("手机13812345678"), "手机138****5678");
        assert_eq!(mask("转500元给尾号1234"), "转500元给尾号1234");
        assert_eq!(mask("验证码 123456"), "验证码 123456");
        assert_eq!(mask("６２２２０２１２３４５６７８９０"), "6222********7890");
        // Card numbers as customers type them when binding.
        for typed in [
            "6222-0200-1234-2345",
            "6222 - 0200 - 1234 - 2345",
            "6222  0200  1234  2345",
            "６２２２　０２００　１２３４　２３４５",
            "６２２２－０２００－１２３４－２３４５",
            "6222—0200—1234—2345",
        ] {
            assert_eq!(mask(typed), "6222********2345", "{typed}");
        }
        assert_eq!(mask("١٢٣٤٥٦٧٨٩٠١٢٣٤"), "١٢٣٤٥٦٧٨٩٠١٢٣٤");
    }

    #[test]
    fn masks_numbers_typed_in_groups() {
        assert_eq!(mask("我的手机 138 1234 5678"), "我的手机 138****5678");
        assert_eq!(mask("电话138-1234-5678谢谢"), "电话138****5678谢谢");
        assert_eq!(mask("１３８－１２３４－５６７８"), "138****5678");
        assert_eq!(mask("１３８　１２３４　５６７８"), "138****5678");
        assert_eq!(mask("卡号6222-0212-3456-7890"), "卡号6222********7890");
        assert_eq!(mask("6222 0212 3456 7890 123"), "6222***********0123");
        assert_eq!(
            mask("身份证 110101 19900307 1234"),
            "身份证 110101********1234"
        );
        // Amounts and dates with dashes are not personal data.
        assert_eq!(mask("2026-11-30 转账 500"), "2026-11-30 转账 500");
    }

    /// Joins digits into groups of `size` with `sep`, as people type them.
    fn grouped(digits: &str, size: usize, sep: &str) -> String {
        digits
            .as_bytes()
            .chunks(size)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(sep)
    }

    proptest::proptest! {
        #[test]
        fn never_leaks_a_long_digit_run(digits in "[0-9]{13,19}") {
            let masked = mask(&digits);
            proptest::prop_assert!(!masked.contains(&digits[4..digits.len() - 4]));
        }

        /// Cards typed in groups of four with spaces, dashes or full-width spaces: the
        /// middle digits never survive, whichever way they are grouped.
        #[test]
        fn never_leaks_a_grouped_card(
            digits in "[0-9]{16,19}",
            sep in proptest::sample::select(vec![" ", "-", "　", "－", "  "]),
        ) {
            let typed = grouped(&digits, 4, sep);
            let masked = mask(&typed);
            let kept: String = masked.chars().filter(char::is_ascii_digit).collect();
            proptest::prop_assert!(kept.len() <= 8, "{typed} -> {masked}");
        }

        /// Mobile numbers as 3-4-4 with any separator.
        #[test]
        fn never_leaks_a_grouped_mobile(
            rest in "[3-9][0-9]{9}",
            sep in proptest::sample::select(vec![" ", "-", "　", "－", ""]),
        ) {
            let number = format!("1{rest}");
            let typed = format!("手机 {}{sep}{}{sep}{}", &number[..3], &number[3..7], &number[7..]);
            let masked = mask(&typed);
            proptest::prop_assert!(masked.contains("****"), "{typed} -> {masked}");
            // The last four are shown; they may repeat the middle four (130 7148 7148).
            let shown_tail = masked.strip_suffix(&number[7..]).unwrap_or(&masked);
            proptest::prop_assert!(!shown_tail.contains(&number[3..7]), "{typed} -> {masked}");
        }
    }
}
