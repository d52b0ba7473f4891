//! Excel workbooks in the knowledge base: `kb check`, the loader and the publish API
//! read `.xlsx` like CSV, and name file, sheet, row and column in their errors. The
//! workbooks are written here with rust_xlsxwriter; no binary fixture is checked in.

mod common;

use base64::Engine as _;
use common::server::{config, Server, ADMIN_TOKEN};
use common::xlsx::{workbook, GOOD};
use kefu::knowledge::KnowledgeBase;
use serde_json::{json, Value};

#[test]
fn a_workbook_loads_like_csv_and_its_errors_name_sheet_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("faq.xlsx"), workbook(GOOD)).unwrap();
    let kb = KnowledgeBase::load_dir(dir.path()).unwrap();
    assert_eq!(kb.len(), 2);
    let e = &kb.entries()[kb.index_of("xl-1").unwrap()];
    assert_eq!(e.question, "斑马理财产品起购金额是多少");
    assert_eq!(e.similar.len(), 2, "{:?}", e.similar);
    assert_eq!(
        e.valid_from.map(|d| d.to_string()).as_deref(),
        Some("2026-01-01")
    );
    let blank = &kb.entries()[kb.index_of("xl-2").unwrap()];
    assert!(
        blank.similar.is_empty(),
        "a blank cell is no similar question"
    );

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("faq.xlsx"),
        workbook(&[GOOD[0], ("xl-2", "斑马理财能提前赎回吗", "", "")]),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["kb", "check", broken.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Row 4 of the sheet (title, header, xl-1, xl-2); the answer is column D.
    assert!(stderr.contains("faq.xlsx:4:4"), "{stderr}");
    assert!(stderr.contains("sheet \"常见问题\", cell D4"), "{stderr}");
    assert!(stderr.contains("empty answer"), "{stderr}");

    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("faq.xlsx"), b"not a zip").unwrap();
    let err = KnowledgeBase::load_dir(junk.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("faq.xlsx:1") && err.contains("xlsx"), "{err}");
}

fn bundled_with(extra: Value) -> Vec<Value> {
    let mut files = vec![extra];
    for (folder, dir) in [("knowledge-base", "knowledge-base"), ("intents", "intents")] {
        for e in std::fs::read_dir(common::repo(dir)).unwrap() {
            let p = e.unwrap().path();
            files.push(json!({
                "name": format!("{folder}/{}", p.file_name().unwrap().to_string_lossy()),
                "content": std::fs::read_to_string(&p).unwrap(),
            }));
        }
    }
    files
}

#[tokio::test]
async fn the_publish_api_takes_a_workbook_in_base64() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let b64 = |rows: &[(&str, &str, &str, &str)]| {
        base64::engine::general_purpose::STANDARD.encode(workbook(rows))
    };

    let bad = bundled_with(json!({"name": "knowledge-base/faq.xlsx",
        "content_base64": b64(&[GOOD[0], ("xl-2", "斑马理财能提前赎回吗", "", "")])}));
    let r = c
        .post(s.url("/v1/admin/kb/publish"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "files": bad }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let report: Value = r.json().await.unwrap();
    let p = &report["problems"][0];
    assert_eq!(p["file"], "knowledge-base/faq.xlsx", "{report}");
    assert_eq!(p["line"], 4, "{report}");
    assert_eq!(p["column"], 4, "{report}");

    let good =
        bundled_with(json!({"name": "knowledge-base/faq.xlsx", "content_base64": b64(GOOD)}));
    let r = c
        .post(s.url("/v1/admin/kb/publish"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "files": good }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let report: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{report}");
    let reply: Value = c
        .post(s.url("/v1/messages"))
        .json(&json!({"user": "x1", "text": "斑马理财最低买多少"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["entry"], "xl-1", "{reply}");
}
