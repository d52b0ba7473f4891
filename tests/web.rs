//! The web pages over plain HTTP: security headers, browser sessions (HttpOnly
//! cookies) and CSRF refusals.

mod common;

use common::server::{config, token, Server, ADMIN_TOKEN};
use reqwest::header::{CONTENT_SECURITY_POLICY, SET_COOKIE};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn pages_and_assets_are_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    for (path, framable) in [("/", true), ("/agent", false), ("/admin", false)] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h.contains_key("x-frame-options"), !framable, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains("/assets/kefu.css"), "{path}");
    }
    let js = c.get(s.url("/assets/chat.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let missing = c.get(s.url("/assets/../kefu.toml")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let api: Value = c
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/v1/agent/session", "/v1/admin/session"] {
        assert!(api["paths"][path]["post"].is_object(), "{path} documented");
    }
}

/// Signs in and returns (cookie pair `name=value`, csrf token).
async fn sign_in(c: &reqwest::Client, s: &Server, path: &str, tok: &str) -> (String, String) {
    let r = c
        .post(s.url(path))
        .json(&json!({ "token": tok }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "not behind https in this test: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    (pair, body["csrf"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_desk_session_works_by_cookie_and_a_forged_cross_site_post_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    let wrong = c
        .post(s.url("/v1/agent/session"))
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let (cookie, csrf) = sign_in(&c, &s, "/v1/agent/session", &token("head")).await;
    // Reads work with the cookie alone (the page's EventSource cannot send headers).
    let q = c
        .get(s.url("/v1/agent/queue"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(q.status(), 200);
    let who: Value = c
        .get(s.url("/v1/agent/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["agent"]["id"], "head");
    assert_eq!(who["csrf"], csrf.as_str());

    let r = c
        .post(s.url("/v1/messages"))
        .json(&json!({"user": "c1", "text": "转人工"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // What a page on another site can make a browser send: the cookie (were it not
    // SameSite) with a form post, no CSRF header.
    let forged = c
        .post(s.url("/v1/agent/claim"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body("ticket=1")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf");
    // Without a CSRF token, even with no fetch metadata, it is refused.
    let no_token = c
        .post(s.url("/v1/agent/claim"))
        .header("cookie", &cookie)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 403);
    // A cross-site request carrying a (stolen) token is refused too.
    let cross = c
        .post(s.url("/v1/agent/claim"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    // Nothing was claimed by the refused requests.
    let view: Value = c
        .get(s.url("/v1/agent/queue"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["queued"].as_array().unwrap().len(), 1, "{view}");
    assert!(view["mine"].as_array().unwrap().is_empty(), "{view}");

    // The page's own request: same origin, with the token.
    let ok = c
        .post(s.url("/v1/agent/claim"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Signing out ends the session on the server, not only in the browser.
    let out = c
        .delete(s.url("/v1/agent/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = c
        .get(s.url("/v1/agent/queue"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn the_content_page_session_needs_its_csrf_token_and_an_agent_cookie_is_not_admin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(""));
    let c = client();
    let (cookie, csrf) = sign_in(&c, &s, "/v1/admin/session", ADMIN_TOKEN).await;
    let stats = c
        .get(s.url("/v1/admin/stats"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let forged = c
        .post(s.url("/v1/admin/kb/validate"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"files": [{"name": "knowledge-base/a.toml", "content": ""}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let (agent_cookie, agent_csrf) = sign_in(&c, &s, "/v1/agent/session", &token("head")).await;
    let r = c
        .get(s.url("/v1/admin/stats"))
        .header("cookie", agent_cookie.replace("kefu_agent", "kefu_admin"))
        .header("x-csrf-token", &agent_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an agent's session is no admin session");
}
