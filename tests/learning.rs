//! Learning from use through the binary: a customer picks from "您是不是想问", the
//! content team sees the suggestion, accepts it into a copy of the knowledge base, and
//! the same wording is then a question of that entry.

mod common;

use common::kefu;

use std::path::Path;

use kefu::knowledge::KnowledgeBase;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `kefu report suggestions --json` on a store and a knowledge base.
fn suggestions(data: &str, kb: &str, cwd: &Path) -> serde_json::Value {
    let out = kefu(
        &[
            "report",
            "suggestions",
            "--data",
            data,
            "--kb",
            kb,
            "--json",
        ],
        b"",
        cwd,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_list_pick_becomes_a_suggestion_that_accept_writes_into_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb");
    copy_dir(&common::repo("knowledge-base"), &kb);
    let intents = common::repo("intents");
    let (kb_s, intents_s) = (kb.to_str().unwrap(), intents.to_str().unwrap());
    let data = dir.path().join("store");
    let data_s = data.to_str().unwrap();

    // Find a wording that is asked back, so the customer has a list to pick from.
    let wording = "卡上的字磨没了要换吗";
    let out = kefu(
        &[
            "chat",
            "--kb",
            kb_s,
            "--intents",
            intents_s,
            "--data",
            data_s,
        ],
        format!("{wording}\n1\n").as_bytes(),
        dir.path(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("您是不是想问"),
        "not asked back any more: {text}"
    );

    let list = suggestions(data_s, kb_s, dir.path());
    let first = &list[0];
    assert_eq!(first["question"], wording, "{list}");
    assert_eq!(first["picks"], 1, "{list}");
    let target = first["entry"].as_str().unwrap().to_owned();

    let out = kefu(
        &["report", "accept", "1", "--data", data_s, "--kb", kb_s],
        b"",
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kb = KnowledgeBase::load_dir(&kb).unwrap();
    let e = &kb.entries()[kb.index_of(&target).unwrap()];
    assert!(e.similar.iter().any(|s| s == wording), "{:?}", e.similar);

    // Accepted: the suggestion is gone, and accepting it again is refused.
    let list = suggestions(data_s, kb_s, dir.path());
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["question"] != wording),
        "{list}"
    );
    let out = kefu(
        &["report", "accept", "9", "--data", data_s, "--kb", kb_s],
        b"",
        dir.path(),
    );
    assert!(!out.status.success());
}

/// A customer answered about the credit-card limit who meant the transfer limit picks
/// it from under the answer: that pick is a suggestion for the transfer-limit entry. A
/// related question picked after an answer that had no close runner-up is not.
#[test]
fn a_runner_up_picked_under_an_answer_becomes_a_suggestion_and_a_related_pick_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data_s = data.to_str().unwrap();
    let chat = |input: &str| {
        let out = kefu(&["chat", "--data", data_s], input.as_bytes(), dir.path());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{text}");
        text
    };
    let meant = "额度太低了怎么提额";
    let text = chat(&format!("{meant}\n1\n"));
    assert!(text.contains("您可能还想问：\n1. 转账"), "{text}");
    // 信用卡年费多少 is answered with no close runner-up: its first option is related.
    let text = chat("信用卡年费多少\n1\n");
    assert!(text.contains("您可能还想问：\n1. "), "{text}");
    let kb = common::repo("knowledge-base");
    let list = suggestions(data_s, kb.to_str().unwrap(), dir.path());
    let all = list.as_array().unwrap();
    assert_eq!(all.len(), 1, "{list}");
    assert_eq!(all[0]["question"], meant, "{list}");
    assert_eq!(all[0]["entry"], "tf-limit-raise", "{list}");
    assert_eq!(all[0]["picks"], 1, "{list}");
}
