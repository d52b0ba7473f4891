//! The three web pages `kefu serve` ships: the customer chat (`/`), the agent desk
//! (`/agent`) and the content page (`/admin`).
//!
//! The pages are plain HTML, CSS and JavaScript compiled into the binary, so kefu has
//! nothing to install and nothing is fetched from a CDN. No page has an inline script
//! or style, which lets every page carry a strict Content-Security-Policy
//! (`script-src 'self'`): even if some customer or knowledge-base text slipped into the
//! DOM as markup, the browser would not run it. The scripts themselves only ever put
//! data into the page with `textContent`.
//!
//! The desk and the content page sign in once with their token and then hold an
//! HttpOnly, SameSite=Strict session cookie ([`session`]); API clients keep using
//! bearer tokens.

pub(crate) mod session;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::channels::http::{ApiError, AppState};
pub use session::{admin_from_cookie, agent_from_cookie, Sessions};

/// One embedded file: its name under `/assets/`, its content type and bytes.
struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "kefu.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("assets/kefu.css"),
    },
    Asset {
        name: "common.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/common.js"),
    },
    Asset {
        name: "chat.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/chat.js"),
    },
    Asset {
        name: "agent.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/agent.js"),
    },
    Asset {
        name: "admin.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/admin.js"),
    },
];

const CHAT_HTML: &str = include_str!("assets/chat.html");
const AGENT_HTML: &str = include_str!("assets/agent.html");
const ADMIN_HTML: &str = include_str!("assets/admin.html");

/// The pages, their assets and the browser session endpoints.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(chat_page))
        .route("/agent", get(agent_page))
        .route("/admin", get(admin_page))
        .route("/assets/{name}", get(asset))
        .merge(session::routes())
}

/// The Content-Security-Policy of a page. Only kefu's own scripts, styles and API;
/// `frame_ancestors` decides who may embed the page.
fn csp(frame_ancestors: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors {frame_ancestors}"
    )
}

fn page(html: &'static str, csp: String, framable: bool) -> Response {
    let mut res = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    if !framable {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

/// The chat may be framed by the bank's own pages (configured origins).
async fn chat_page(State(state): State<Arc<AppState>>) -> Response {
    let mut ancestors = vec!["'self'".to_owned()];
    ancestors.extend(
        state
            .config
            .chat_frame_ancestors
            .iter()
            // An origin with spaces or quotes would break out of the directive.
            .filter(|o| {
                !o.is_empty()
                    && o.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b';' && b != b'\'')
            })
            .cloned(),
    );
    page(CHAT_HTML, csp(&ancestors.join(" ")), true)
}

/// The desk and the content page act with an agent's or admin's rights: never framed.
async fn agent_page() -> Response {
    page(AGENT_HTML, csp("'none'"), false)
}

async fn admin_page() -> Response {
    page(ADMIN_HTML, csp("'none'"), false)
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let a = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("no such asset"))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, a.mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        a.body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_have_no_inline_script_or_style_and_only_local_assets() {
        for html in [CHAT_HTML, AGENT_HTML, ADMIN_HTML] {
            for tag in html.split("<script").skip(1) {
                let open = &tag[..tag.find('>').unwrap_or(tag.len())];
                assert!(
                    open.contains("src=\"/assets/"),
                    "inline or foreign script: {open}"
                );
            }
            assert!(!html.contains("<style"), "inline style");
            assert!(!html.contains(" style="), "inline style attribute");
            for (i, _) in html.match_indices(" on") {
                let rest: String = html[i + 3..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase())
                    .collect();
                let after = html[i + 3 + rest.len()..].chars().next();
                assert!(
                    rest.is_empty() || after != Some('='),
                    "inline event handler on{rest}"
                );
            }
            assert!(!html.contains("http://") && !html.contains("https://"));
        }
    }

    #[test]
    fn scripts_never_write_markup() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!a.body.contains(bad), "{} uses {bad}", a.name);
            }
        }
    }

    #[test]
    fn csp_is_strict() {
        let c = csp("'none'");
        assert!(c.contains("default-src 'none'"));
        assert!(c.contains("script-src 'self';"));
        assert!(!c.contains("unsafe"));
    }
}
