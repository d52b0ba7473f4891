//! The bot's own wording: welcome, fallback, ask-back titles, hand-off notices and error
//! replies. They belong to the bank, not to the code: `knowledge-base/replies.toml`
//! overrides any of them (the defaults below are used for what it leaves out), with the
//! bank's name as `{bank}` and the placeholders each text allows. It is validated with
//! file and line like the rest of the knowledge base, and published with it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ContentIssue, Location};
use crate::knowledge::content::{read_text, toml_issue, LineIndex};

/// The file name that holds the wording in a knowledge-base directory.
pub const REPLIES: &str = "replies.toml";

macro_rules! wording {
    ($( $(#[doc = $doc:literal])* $field:ident: [$($ph:literal),*] = $default:literal, )*) => {
        /// Every text the engine says on its own. See the module docs.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Wording {
            /// The bank's name, for `{bank}` in any text.
            pub bank: String,
            $( $(#[doc = $doc])* pub $field: String, )*
        }

        impl Default for Wording {
            fn default() -> Self {
                Wording {
                    bank: "本行".into(),
                    $( $field: $default.into(), )*
                }
            }
        }

        impl Wording {
            /// (field, text, placeholders it may use besides `{bank}`).
            fn fields(&self) -> Vec<(&'static str, &str, &'static [&'static str])> {
                vec![ $( (stringify!($field), self.$field.as_str(), &[$($ph),*]), )* ]
            }
        }
    };
}

wording! {
    /// After a greeting or when a chat opens.
    welcome: [] = "您好，我是{bank}智能客服，请直接输入您的问题。需要人工服务请回复“转人工”。",
    welcome_title: [] = "大家都在问：",
    /// Above the related questions after an answer.
    related_title: [] = "您可能还想问：",
    /// Asking back with a list of candidates.
    clarify: [] = "我不太确定您想问的是哪一个，请回复序号：",
    clarify_title: [] = "您是不是想问：",
    /// Asking back about one close candidate.
    confirm: ["question"] = "您是想问「{question}」吗？回复 1 查看答案，或换个说法再问。",
    confirm_title: [] = "请回复序号：",
    /// Nothing matched.
    fallback: [] = "抱歉，我暂时没有找到这个问题的答案。您可以换个说法再问一次，或回复“转人工”联系人工客服。",
    /// Nothing matched again: a person is offered.
    offer_handoff: [] = "看起来我没能帮到您，抱歉。需要为您转接人工客服吗？回复 1 即可转人工，或继续输入您的问题。",
    choose_title: [] = "您可以选择：",
    /// The menu item that hands the chat to a person.
    handoff_label: [] = "转人工客服",
    empty_message: [] = "没有收到文字内容。请用文字描述您的问题，例如“信用卡丢了怎么办”。",
    too_long: ["chars", "max"] = "您的消息有{chars}个字，超过了{max}字的上限。请用一两句话描述您的问题。",
    entry_unavailable: [] = "这项内容暂时无法查看，请直接输入您的问题。",
    menu_expired: [] = "之前的列表已过期，请直接输入您的问题。",
    no_menu: [] = "当前没有可以选择的列表。请直接输入您的问题，例如“信用卡丢了怎么办”。",
    out_of_range: ["max"] = "请回复 1 到 {max} 之间的数字选择，或直接输入您的问题。",
    entry_changed: [] = "这条内容刚刚更新过，请重新输入您的问题。",
    cancelled_menu: [] = "好的，已取消。还有其他问题可以随时问我。",
    cancelled_nothing: [] = "好的。还有其他问题可以随时问我。",
    thanks: [] = "不客气，很高兴能帮到您！还有其他问题可以随时问我。",
    feedback_positive: [] = "感谢您的评价！还有其他问题可以随时问我。",
    feedback_negative: [] = "抱歉没能帮到您，您的反馈已记录，我们会改进这条回答。您可以换个说法再问，或选择：",
    feedback_other: [] = "感谢您的反馈！请问还有什么可以帮您？",
    /// Hand-off: the lead of the queue status when a chat is queued in service hours.
    handoff_start: [] = "正在为您转接人工客服。",
    /// … and outside them.
    handoff_closed_hours: ["open", "close"] = "现在不在人工服务时间（每天{open}-{close}）。您可以直接留言，",
    handoff_message_received: [] = "已收到您的消息，人工客服接入后会一并看到。",
    handoff_busy: [] = "当前咨询人数较多，感谢您耐心等待。",
    handoff_left_message: [] = "您的留言已保存，人工客服上班后会按顺序回复您。",
    handoff_place: ["position", "minutes"] = "您目前排在第{position}位，预计等待约{minutes}分钟。",
    handoff_cancel_hint: [] = "回复“取消”可退出排队。",
    handoff_cancelled: [] = "已为您取消人工排队。有问题可以继续问我。",
    handoff_closed: [] = "本次人工服务已结束，感谢您的耐心。如还有问题，可以直接问我，或再次回复“转人工”。",
    handoff_timeout_returned: [] = "抱歉，人工客服暂时都在忙，您的排队已结束。您可以继续向我提问，或稍后再回复“转人工”。",
    handoff_timeout_waiting: [] = "当前咨询人数较多，您仍在排队中，请耐心等待；回复“取消”可退出排队。",
}

impl Wording {
    /// `template` with `{bank}` and the given placeholders filled in.
    pub fn fill(&self, template: &str, values: &[(&str, &str)]) -> String {
        let mut out = template.replace("{bank}", &self.bank);
        for (name, value) in values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }

    /// A text without placeholders of its own, with `{bank}` filled in.
    pub fn say(&self, template: &str) -> String {
        self.fill(template, &[])
    }

    /// Reads `replies.toml`: unknown keys, empty texts and placeholders a text cannot
    /// use are reported with their line.
    pub fn load(path: &Path) -> Result<Self, Vec<ContentIssue>> {
        let text = read_text(path).map_err(|i| vec![i])?;
        let lines = LineIndex::new(&text);
        let wording: Wording =
            toml::from_str(&text).map_err(|e| vec![toml_issue(path, &lines, &e)])?;
        let line_of = |key: &str| {
            text.lines()
                .position(|l| {
                    l.trim_start()
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                })
                .map_or(1, |i| i + 1)
        };
        let mut issues = Vec::new();
        if wording.bank.trim().is_empty() {
            issues.push(ContentIssue {
                location: Location::new(path, line_of("bank"), None),
                message: "bank must not be empty".into(),
            });
        }
        for (field, value, allowed) in wording.fields() {
            let issue = |message: String| ContentIssue {
                location: Location::new(path, line_of(field), None),
                message,
            };
            if value.trim().is_empty() {
                issues.push(issue(format!("{field} must not be empty")));
                continue;
            }
            for ph in placeholders(value) {
                if ph != "bank" && !allowed.contains(&ph) {
                    let known: Vec<String> = std::iter::once("bank")
                        .chain(allowed.iter().copied())
                        .map(|p| format!("{{{p}}}"))
                        .collect();
                    issues.push(issue(format!(
                        "{field} uses {{{ph}}}, which it cannot fill; it may use {}",
                        known.join(", ")
                    )));
                }
            }
        }
        if issues.is_empty() {
            Ok(wording)
        } else {
            Err(issues)
        }
    }
}

/// Names inside `{…}` in a text.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bank_overrides_some_texts_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(REPLIES);
        std::fs::write(
            &p,
            "bank = \"示例银行\"\nwelcome = \"欢迎来到{bank}！\"\nhandoff_place = \"前面还有{position}位，约{minutes}分钟。\"\n",
        )
        .unwrap();
        let w = Wording::load(&p).unwrap();
        assert_eq!(w.say(&w.welcome), "欢迎来到示例银行！");
        assert_eq!(
            w.fill(&w.handoff_place, &[("position", "2"), ("minutes", "6")]),
            "前面还有2位，约6分钟。"
        );
        assert_eq!(w.fallback, Wording::default().fallback);
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(REPLIES);
        std::fs::write(
            &p,
            "bank = \"示例银行\"\n\nfallback = \"\"\nwelcome = \"您好{name}\"\n",
        )
        .unwrap();
        let issues = Wording::load(&p).unwrap_err();
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("replies.toml:3") && t.contains("fallback must not be empty")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("replies.toml:4") && t.contains("{name}")),
            "{text:?}"
        );
        std::fs::write(&p, "welcom = \"hi\"\n").unwrap();
        let issues = Wording::load(&p).unwrap_err();
        assert!(
            issues[0].to_string().contains("unknown field `welcom`"),
            "{issues:?}"
        );
    }
}
