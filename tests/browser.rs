//! The three pages in a real browser (headless Chromium over WebDriver) against a real
//! `kefu serve`: the customer/agent scenario in two browsers, escaping of customer and
//! knowledge-base text, and a broken upload on the content page.
//!
//! With `KEFU_SCREENSHOTS=DIR` the tests also save the README's screenshots there.

mod common;

use std::path::{Path, PathBuf};

use common::browser::{self, Browser, Driver};
use common::server::{config, token, Server, ADMIN_TOKEN};
use common::xlsx::GOOD;
use serde_json::{json, Value};

fn shots() -> Option<PathBuf> {
    std::env::var_os("KEFU_SCREENSHOTS").map(PathBuf::from)
}

async fn shot(b: &Browser, name: &str) {
    if let Some(dir) = shots() {
        std::fs::create_dir_all(&dir).unwrap();
        // The page at the top, and a moment for the last change to be painted.
        b.js("window.scrollTo(0, 0)", json!([])).await;
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        b.screenshot(&dir.join(name)).await;
    }
}

/// Sends a customer message from the chat page's input.
async fn say(b: &Browser, text: &str) {
    b.type_in("#text", text).await;
    b.click("#send").await;
}

/// How many customer-visible bubbles of `class` contain `text`.
async fn count(b: &Browser, class: &str, text: &str) -> u64 {
    b.js(
        "return Array.from(document.querySelectorAll('#log .msg.' + arguments[0])).filter(e => e.textContent.includes(arguments[1])).length",
        json!([class, text]),
    )
    .await
    .as_u64()
    .unwrap()
}

async fn wait_text(b: &Browser, css: &str, text: &str, secs: u64) {
    b.wait_for(
        &format!("{text:?} in {css}"),
        &format!(
            "return Array.from(document.querySelectorAll({})).some(e => e.textContent.includes({}))",
            json!(css),
            json!(text)
        ),
        secs,
    )
    .await;
}

/// Every form control of the page has a label.
async fn all_labeled(b: &Browser) {
    let unlabeled = b
        .js(
            "return Array.from(document.querySelectorAll('input, textarea, select')).filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)",
            json!([]),
        )
        .await;
    assert_eq!(unlabeled, json!([]), "controls without a label");
}

async fn agent_signs_in(b: &Browser, s: &Server) {
    b.goto(&s.url("/agent")).await;
    b.wait_for(
        "sign-in form",
        "return !document.getElementById('signin').hidden",
        20,
    )
    .await;
    b.type_in("#token", &token("head")).await;
    b.click("#signin-form button").await;
    b.wait_for(
        "the desk",
        "return !document.getElementById('desk').hidden",
        20,
    )
    .await;
}

async fn setup() -> Option<(tempfile::TempDir, Server, Driver)> {
    let (chromium, driver) = browser::find()?;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let d = Driver::start(&chromium, &driver).await;
    Some((dir, s, d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_asks_hands_off_and_an_agent_answers_live_in_another_browser() {
    let Some((dir, s, d)) = setup().await else {
        return;
    };
    let customer = d.browser(&dir.path().join("customer-profile")).await;
    customer.size(420, 860).await;
    customer.goto(&s.url("/")).await;

    // 1. A vague question: numbered options as buttons; clicking one answers it.
    say(&customer, "密码").await;
    customer
        .wait_for(
            "options",
            "return document.querySelectorAll('#log button.option').length >= 2",
            20,
        )
        .await;
    let label = customer.text("#log button.option").await;
    assert!(label.starts_with("1. "), "{label}");
    customer.click("#log button.option").await;
    customer
        .wait_for(
            "an answer with 👍/👎",
            "return document.querySelectorAll('#log .rate-up').length",
            20,
        )
        .await;
    shot(&customer, "chat.png").await;
    assert_eq!(
        count(&customer, "me", &label).await,
        1,
        "the click is shown as the customer's words"
    );
    // Typing the number still works.
    say(&customer, "密码").await;
    customer
        .wait_for("options again", "return document.querySelectorAll('#log .msg.bot')[document.querySelectorAll('#log .msg.bot').length-1].querySelectorAll('button.option').length", 20)
        .await;
    let answers = customer
        .js(
            "return document.querySelectorAll('#log .rate-up').length",
            json!([]),
        )
        .await;
    say(&customer, "2").await;
    customer
        .wait_for(
            "a second answer",
            &format!("return document.querySelectorAll('#log .rate-up').length > {answers}"),
            20,
        )
        .await;
    // 👍 is understood as feedback.
    customer.click("#log .rate-up").await;
    wait_text(&customer, "#log .msg.me", "👍", 10).await;

    // 2. 转人工: the customer sees their place.
    say(&customer, "转人工").await;
    customer
        .wait_for("queue place", "const s = document.getElementById('status'); return !s.hidden && s.textContent.includes('第 1 位')", 20)
        .await;

    // 3. An agent in another browser signs in, sees the wait, claims, replies.
    let agent = d.browser(&dir.path().join("agent-profile")).await;
    agent_signs_in(&agent, &s).await;
    wait_text(&agent, "#queue li", "等待", 20).await;
    // A second customer (over the API) queues too; the agent claims both at once.
    let api = reqwest::Client::builder().no_proxy().build().unwrap();
    let second = |text: &'static str| {
        api.post(s.url("/v1/messages"))
            .json(&json!({"user": "second-customer", "text": text}))
            .send()
    };
    assert_eq!(second("转人工").await.unwrap().status(), 200);
    agent
        .wait_for(
            "two queued chats",
            "return document.querySelectorAll('#queue input[type=checkbox]').length === 2",
            20,
        )
        .await;
    agent
        .js(
            "document.querySelectorAll('#queue input[type=checkbox]').forEach(c => c.click())",
            json!([]),
        )
        .await;
    agent.click("#claim-selected").await;
    agent
        .wait_for(
            "two chats of mine",
            "return document.querySelectorAll('#mine button').length === 2",
            20,
        )
        .await;
    let user = customer
        .js(
            "return JSON.parse(localStorage.getItem('kefu.chat.v1')).user",
            json!([]),
        )
        .await;
    agent
        .js(
            "Array.from(document.querySelectorAll('#mine button')).find(b => b.textContent.includes(arguments[0])).click()",
            json!([user]),
        )
        .await;
    agent
        .wait_for(
            "the open chat",
            "return !document.getElementById('chat').hidden",
            20,
        )
        .await;
    wait_text(&agent, "#chat-customer", user.as_str().unwrap(), 10).await;
    // The other customer writes: a badge on their chat and in the title.
    assert_eq!(second("我的卡被吞了").await.unwrap().status(), 200);
    agent
        .wait_for(
            "a title badge",
            "return document.title.startsWith('(1) ') && document.querySelectorAll('#mine .unread').length === 1",
            20,
        )
        .await;
    wait_text(&agent, "#transcript", "转人工", 10).await;
    assert!(!agent.text("#chat-intent").await.is_empty());
    wait_text(&customer, "#log .msg.system", "已接入", 20).await;

    agent
        .type_in("#reply", "您好，我是客服，请问密码的问题解决了吗？")
        .await;
    agent.click("#reply-form button[type=submit]").await;

    // 4. The customer sees it live.
    wait_text(&customer, "#log .msg.agent", "请问密码的问题解决了吗", 20).await;

    // A reload shows the conversation once, and later messages still arrive once.
    customer.goto(&s.url("/")).await;
    wait_text(&customer, "#log .msg.agent", "请问密码的问题解决了吗", 20).await;
    agent.type_in("#reply", "还有别的可以帮您吗").await;
    agent.click("#reply-form button[type=submit]").await;
    wait_text(&customer, "#log .msg.agent", "还有别的可以帮您吗", 20).await;
    assert_eq!(count(&customer, "agent", "请问密码的问题解决了吗").await, 1);
    assert_eq!(count(&customer, "agent", "还有别的可以帮您吗").await, 1);
    assert_eq!(count(&customer, "system", "已接入").await, 1);

    // The customer writes; the desk shows it live.
    say(&customer, "没有了，谢谢").await;
    wait_text(&agent, "#transcript", "没有了，谢谢", 20).await;
    agent.type_in("#search", "忘记密码").await;
    agent.click("#search-form button").await;
    wait_text(&agent, "#hits", "插入回复", 20).await;
    shot(&agent, "agent.png").await;

    // 5. The agent closes with a summary; the customer is back with the bot.
    agent.type_in("#summary", "密码问题已解答").await;
    agent.click("#close-form button[type=submit]").await;
    wait_text(&customer, "#log .msg.system", "智能客服继续为您服务", 20).await;
    customer
        .wait_for(
            "no hand-off status",
            "return document.getElementById('status').hidden",
            10,
        )
        .await;
    let bots = customer
        .js(
            "return document.querySelectorAll('#log .msg.bot').length",
            json!([]),
        )
        .await;
    say(&customer, "利息").await;
    customer
        .wait_for(
            "the bot again",
            &format!("return document.querySelectorAll('#log .msg.bot').length > {bots}"),
            20,
        )
        .await;
    customer.quit().await;
    agent.quit().await;
}

/// A knowledge-base entry whose answer is markup, published through the admin API.
async fn publish_hostile_entry(s: &Server) {
    let mut files = Vec::new();
    for (folder, dir) in [("knowledge-base", "knowledge-base"), ("intents", "intents")] {
        for e in std::fs::read_dir(common::repo(dir)).unwrap() {
            let p = e.unwrap().path();
            files.push(json!({
                "name": format!("{folder}/{}", p.file_name().unwrap().to_string_lossy()),
                "content": std::fs::read_to_string(&p).unwrap(),
            }));
        }
    }
    files.push(json!({"name": "knowledge-base/zz-hostile.toml", "content":
        "[[entry]]\nid = \"hostile-markup\"\ncategory = \"测试\"\nquestion = \"斑马条纹测试问题怎么回答\"\nanswer = '''斑马答案<img src=x onerror=\"window.__xss='answer-img'\"><script>window.__xss='answer-script'</script>'''\n"}));
    let r = reqwest::Client::new()
        .post(s.url("/v1/admin/kb/publish"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "files": files }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

async fn no_injection(b: &Browser, root: &str) {
    let v = b
        .js(
            "return {xss: window.__xss === undefined ? null : window.__xss, imgs: document.querySelectorAll(arguments[0] + ' img').length, scripts: document.querySelectorAll(arguments[0] + ' script').length}",
            json!([root]),
        )
        .await;
    assert_eq!(
        v,
        json!({"xss": null, "imgs": 0, "scripts": 0}),
        "markup ran or was inserted in {root}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_and_knowledge_base_text_is_shown_as_text_never_as_markup() {
    let Some((dir, s, d)) = setup().await else {
        return;
    };
    publish_hostile_entry(&s).await;
    let customer = d.browser(&dir.path().join("customer-profile")).await;
    customer.goto(&s.url("/")).await;

    let img = "<img src=x onerror=\"window.__xss='message-img'\">";
    let script = "<script>window.__xss='message-script'</script>";
    say(&customer, img).await;
    say(&customer, script).await;
    wait_text(&customer, "#log .msg.me", "<img src=x onerror=", 20).await;
    wait_text(&customer, "#log .msg.me", "<script>window.__xss", 20).await;
    say(&customer, "斑马条纹测试问题怎么回答").await;
    wait_text(
        &customer,
        "#log .msg.bot",
        "斑马答案<img src=x onerror=",
        20,
    )
    .await;
    wait_text(
        &customer,
        "#log .msg.bot",
        "<script>window.__xss='answer-script'</script>",
        5,
    )
    .await;
    no_injection(&customer, "#log").await;

    // The desk shows the same text in the transcript and in knowledge-base search,
    // and an inserted answer reaches the customer as text.
    say(&customer, "转人工").await;
    let agent = d.browser(&dir.path().join("agent-profile")).await;
    agent_signs_in(&agent, &s).await;
    agent.click("#claim-next").await;
    wait_text(&agent, "#transcript", "<img src=x onerror=", 20).await;
    agent.type_in("#search", "斑马条纹测试问题").await;
    agent.click("#search-form button").await;
    wait_text(&agent, "#hits", "斑马答案<img src=x onerror=", 20).await;
    no_injection(&agent, "#desk").await;
    all_labeled(&agent).await;
    agent.click("#hits li.hit button").await;
    let inserted = agent
        .js("return document.getElementById('reply').value", json!([]))
        .await;
    assert!(
        inserted
            .as_str()
            .unwrap()
            .contains("<script>window.__xss='answer-script'</script>"),
        "{inserted}"
    );
    agent.click("#reply-form button[type=submit]").await;
    wait_text(
        &customer,
        "#log .msg.agent",
        "斑马答案<img src=x onerror=",
        20,
    )
    .await;
    no_injection(&customer, "#log").await;
    no_injection(&agent, "#desk").await;
    customer.quit().await;
    agent.quit().await;
}

fn broken_cards(dir: &Path) -> PathBuf {
    let p = dir.join("cards.toml");
    let good = std::fs::read_to_string(common::repo("knowledge-base/cards.toml")).unwrap();
    std::fs::write(
        &p,
        format!("{good}\n[[entry]]\nid = \"card-lost\"\nquestion = \"重复的id\"\n"),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_upload_on_the_content_page_shows_each_error_at_file_and_line() {
    let Some((dir, s, d)) = setup().await else {
        return;
    };
    let admin = d.browser(&dir.path().join("admin-profile")).await;
    admin.goto(&s.url("/admin")).await;
    admin
        .wait_for(
            "sign-in form",
            "return !document.getElementById('signin').hidden",
            20,
        )
        .await;
    admin.type_in("#token", "wrong-token").await;
    admin.click("#signin-form button").await;
    wait_text(&admin, "#signin-error", "令牌无效", 10).await;
    admin.type_in("#token", ADMIN_TOKEN).await;
    admin.click("#signin-form button").await;
    admin
        .wait_for(
            "statistics",
            "return document.querySelectorAll('#stats dt').length",
            20,
        )
        .await;
    // The cookie is HttpOnly: the page's scripts cannot read it.
    assert_eq!(
        admin.js("return document.cookie", json!([])).await,
        json!("")
    );

    let upload = dir.path().join("upload");
    std::fs::create_dir_all(&upload).unwrap();
    let mut paths = vec![broken_cards(&upload)];
    for e in std::fs::read_dir(common::repo("knowledge-base")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "cards.toml" {
            paths.push(p);
        }
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    admin.type_in("#kb-files", &list.join("\n")).await;
    admin.click("#validate").await;
    admin
        .wait_for(
            "problems",
            "return document.querySelectorAll('#problems tr.problem').length",
            30,
        )
        .await;
    let line = admin
        .js(
            "const r = Array.from(document.querySelectorAll('#problems tr.problem')).find(r => r.cells[0].textContent === 'knowledge-base/cards.toml'); return r ? Number(r.cells[1].textContent) : null",
            json!([]),
        )
        .await;
    assert!(
        line.as_u64().is_some_and(|l| l > 100),
        "cards.toml's problem at line {line}"
    );
    assert!(admin.text("#result").await.contains("问题"));
    // Publishing the same files is refused and says so.
    admin.click("#publish").await;
    wait_text(&admin, "#result", "未发布", 30).await;
    shot(&admin, "admin.png").await;
    all_labeled(&admin).await;

    // An Excel workbook goes up as base64; its errors name sheet and cell.
    let mut bundled: Vec<String> = std::fs::read_dir(common::repo("knowledge-base"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let xlsx = upload.join("faq.xlsx");
    std::fs::write(
        &xlsx,
        common::xlsx::workbook(&[GOOD[0], ("xl-2", "斑马理财能提前赎回吗", "", "")]),
    )
    .unwrap();
    bundled.push(xlsx.display().to_string());
    admin.clear("#kb-files").await;
    admin.type_in("#kb-files", &bundled.join("\n")).await;
    admin.click("#validate").await;
    wait_text(
        &admin,
        "#problems tr.problem",
        "knowledge-base/faq.xlsx",
        30,
    )
    .await;
    wait_text(&admin, "#problems tr.problem", "cell D4", 5).await;
    std::fs::write(&xlsx, common::xlsx::workbook(GOOD)).unwrap();
    admin.clear("#kb-files").await;
    admin.type_in("#kb-files", &bundled.join("\n")).await;
    admin.click("#validate").await;
    wait_text(&admin, "#result", "校验通过", 30).await;
    assert!(admin
        .js(
            "return document.getElementById('problems').hidden",
            json!([])
        )
        .await
        .as_bool()
        .unwrap());
    admin.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_loses_no_message_and_shows_none_twice() {
    let Some((dir, s, d)) = setup().await else {
        return;
    };
    let customer = d.browser(&dir.path().join("customer-profile")).await;
    customer.goto(&s.url("/")).await;
    say(&customer, "转人工").await;
    customer
        .wait_for(
            "queue place",
            "return !document.getElementById('status').hidden",
            20,
        )
        .await;
    let user = customer
        .js(
            "return JSON.parse(localStorage.getItem('kefu.chat.v1')).user",
            json!([]),
        )
        .await;
    let api = reqwest::Client::builder().no_proxy().build().unwrap();
    let claimed: Value = api
        .post(s.url("/v1/agent/claim"))
        .bearer_auth(token("head"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claimed["customer"], user, "{claimed}");
    let ticket = claimed["ticket"].as_u64().unwrap();
    let reply = |text: &'static str| {
        api.post(s.url(&format!("/v1/agent/chats/{ticket}/reply")))
            .bearer_auth(token("head"))
            .json(&json!({ "text": text }))
            .send()
    };
    wait_text(&customer, "#log .msg.system", "已接入", 20).await;

    // Off the network: the customer writes, the agent writes.
    customer.offline(true).await;
    say(&customer, "我刚才断网了").await;
    wait_text(&customer, "#status", "正在重新发送", 20).await;
    assert_eq!(reply("断网期间客服发的消息").await.unwrap().status(), 200);
    customer.offline(false).await;

    // Back on: the customer's message reaches the agent once, the agent's reaches the
    // customer once.
    wait_text(&customer, "#log .msg.agent", "断网期间客服发的消息", 30).await;
    let chat = || async {
        api.get(s.url(&format!("/v1/agent/chats/{ticket}")))
            .bearer_auth(token("head"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let mut seen = 0;
    for _ in 0..100 {
        let c = chat().await;
        seen = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["text"] == "我刚才断网了")
            .count();
        if seen > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(seen, 1, "the customer's message reaches the agent once");
    assert_eq!(reply("恢复后的消息").await.unwrap().status(), 200);
    wait_text(&customer, "#log .msg.agent", "恢复后的消息", 20).await;
    assert_eq!(count(&customer, "agent", "断网期间客服发的消息").await, 1);
    assert_eq!(count(&customer, "me", "我刚才断网了").await, 1);
    customer.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_works_with_the_keyboard_alone() {
    let Some((dir, s, d)) = setup().await else {
        return;
    };
    let customer = d.browser(&dir.path().join("customer-profile")).await;
    customer.goto(&s.url("/")).await;
    customer.click("#text").await;
    // Enter sends.
    customer.keys("密码\u{E007}").await;
    customer
        .wait_for(
            "options",
            "return document.querySelectorAll('#log button.option').length >= 2",
            20,
        )
        .await;
    // Shift+Tab from the input reaches the last option; Enter picks it.
    customer.keys("\u{E008}\u{E004}\u{E000}").await;
    let focused = customer
        .js("return document.activeElement.textContent", json!([]))
        .await;
    let focused = focused.as_str().unwrap().to_owned();
    assert!(focused.starts_with("4. "), "focus is on {focused:?}");
    customer.keys("\u{E007}").await;
    wait_text(&customer, "#log .msg.me", &focused, 20).await;
    all_labeled(&customer).await;
    customer.quit().await;
}
