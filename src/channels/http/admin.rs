//! The admin API (`/v1/admin/…`, admin bearer token): validate and publish content,
//! read reports. Without an admin token in the configuration, every call is refused.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson};
use super::{bearer, AppState, Client};
use crate::error::Error;
use crate::knowledge::bundle::{ContentBundle, ContentFile};
use crate::knowledge::Summary;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/admin/kb/validate", post(validate))
        .route("/v1/admin/kb/publish", post(publish))
        .route("/v1/admin/report/unanswered", get(unanswered))
        .route("/v1/admin/stats", get(stats))
}

fn admin(state: &AppState, client: &Client, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer(headers).is_none() {
        // The content page signs in once and sends a session cookie instead.
        return crate::channels::web::admin_from_cookie(state, headers);
    }
    if state.check_token(client, || state.admin_ok(bearer(headers)))? {
        Ok(())
    } else {
        metrics::counter!("kefu_errors_total", "kind" => "admin_unauthorized").increment(1);
        tracing::warn!("admin request without a valid token refused");
        Err(ApiError::unauthorized())
    }
}

/// One uploaded file: `knowledge-base/NAME` or `intents/NAME`, with its text (UTF-8)
/// or its bytes in base64 (for spreadsheets and files in other encodings, which the
/// validator then reports precisely).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadFile {
    pub name: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub content_base64: Option<String>,
}

/// A complete content set: every knowledge-base file and every intents file.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentUpload {
    pub files: Vec<UploadFile>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationReport {
    pub valid: bool,
    /// The version this content would serve as.
    pub version: String,
    pub entries: usize,
    pub similar_questions: usize,
    pub categories: usize,
    /// Every problem, with file and line.
    pub problems: Vec<Problem>,
}

fn bundle(upload: ContentUpload) -> Result<ContentBundle, ApiError> {
    if upload.files.is_empty() {
        return Err(ApiError::bad_request("invalid_input", "no files uploaded"));
    }
    let mut files = Vec::with_capacity(upload.files.len());
    for f in upload.files {
        let bytes = match (f.content, f.content_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_input",
                        format!("{}: content_base64 is not valid base64", f.name),
                    )
                })?,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    format!("{}: give exactly one of content and content_base64", f.name),
                ))
            }
        };
        files.push(ContentFile {
            name: f.name,
            bytes,
        });
    }
    Ok(ContentBundle { files })
}

fn report(version: String, result: Result<Summary, Error>) -> Result<ValidationReport, ApiError> {
    match result {
        Ok(s) => Ok(ValidationReport {
            valid: true,
            version,
            entries: s.entries,
            similar_questions: s.similar_questions,
            categories: s.categories,
            problems: Vec::new(),
        }),
        Err(Error::Content(errors)) => Ok(ValidationReport {
            valid: false,
            version,
            entries: 0,
            similar_questions: 0,
            categories: 0,
            problems: errors
                .0
                .into_iter()
                .map(|i| Problem {
                    file: i.location.file.display().to_string(),
                    line: i.location.line,
                    column: i.location.column,
                    message: i.message,
                })
                .collect(),
        }),
        Err(Error::InvalidInput(m)) => Err(ApiError::bad_request("invalid_content", m)),
        Err(e) => Err(e.into()),
    }
}

/// Validate uploaded content without publishing it.
#[utoipa::path(post, path = "/v1/admin/kb/validate", request_body = ContentUpload, security(("bearer" = [])),
    responses((status = 200, body = ValidationReport), (status = 401, body = super::error::ErrorBody)))]
pub(super) async fn validate(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    ApiJson(upload): ApiJson<ContentUpload>,
) -> Result<ApiJson<ValidationReport>, ApiError> {
    admin(&state, &client, &headers)?;
    let content = bundle(upload)?;
    let version = content.version();
    let result =
        tokio::task::spawn_blocking(move || content.load().map(|(kb, _)| kb.summary())).await?;
    Ok(ApiJson(report(version, result)?))
}

/// Validate, then publish: the new knowledge base is built aside and swapped in
/// atomically; requests in flight finish on the old one. Broken content is refused
/// with every problem (422) and the old knowledge base keeps serving.
#[utoipa::path(post, path = "/v1/admin/kb/publish", request_body = ContentUpload, security(("bearer" = [])),
    responses((status = 200, body = ValidationReport), (status = 422, body = ValidationReport),
              (status = 401, body = super::error::ErrorBody)))]
pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    ApiJson(upload): ApiJson<ContentUpload>,
) -> Result<(StatusCode, ApiJson<ValidationReport>), ApiError> {
    admin(&state, &client, &headers)?;
    let content = bundle(upload)?;
    let version = content.version();
    // Publishing builds a whole index: it gets its own task, not the request deadline.
    let engine = state.engine.clone();
    let result = tokio::task::spawn_blocking(move || engine.publish(&content)).await?;
    let report = report(version.clone(), result)?;
    if report.valid {
        tracing::info!(version = %version, entries = report.entries, "knowledge base published");
        metrics::counter!("kefu_publishes_total", "result" => "ok").increment(1);
        Ok((StatusCode::OK, ApiJson(report)))
    } else {
        metrics::counter!("kefu_publishes_total", "result" => "refused").increment(1);
        Ok((StatusCode::UNPROCESSABLE_ENTITY, ApiJson(report)))
    }
}

/// Unanswered and asked-back questions, grouped by wording, most frequent first.
#[utoipa::path(get, path = "/v1/admin/report/unanswered", security(("bearer" = [])),
    responses((status = 200, description = "groups of questions")))]
pub(super) async fn unanswered(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
) -> Result<ApiJson<Vec<crate::report::UnansweredGroup>>, ApiError> {
    admin(&state, &client, &headers)?;
    let groups = state.blocking(|e| e.unanswered()).await?;
    Ok(ApiJson(groups))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub version: String,
    pub entries: usize,
    pub queued: usize,
    pub questions: usize,
    pub answered: usize,
    pub asked_back: usize,
    pub unanswered: usize,
    pub handoffs: usize,
    pub feedback_positive: usize,
    pub feedback_negative: usize,
}

/// Basic statistics from the event log.
#[utoipa::path(get, path = "/v1/admin/stats", security(("bearer" = [])),
    responses((status = 200, body = Stats)))]
pub(super) async fn stats(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
) -> Result<ApiJson<Stats>, ApiError> {
    admin(&state, &client, &headers)?;
    let stats = state
        .blocking(|e| {
            use crate::retrieval::Band;
            use crate::store::EventKind;
            let mut s = Stats {
                version: e.version(),
                entries: e.knowledge_summary().entries,
                queued: e.queue().queued_len()?,
                questions: 0,
                answered: 0,
                asked_back: 0,
                unanswered: 0,
                handoffs: 0,
                feedback_positive: 0,
                feedback_negative: 0,
            };
            for ev in e.store().events()? {
                match ev.kind {
                    EventKind::Question { band, .. } => {
                        s.questions += 1;
                        match band {
                            Band::Confident => s.answered += 1,
                            Band::Uncertain => s.asked_back += 1,
                            Band::NoMatch => s.unanswered += 1,
                        }
                    }
                    EventKind::Intent { name } if name == "handoff" => s.handoffs += 1,
                    EventKind::Feedback { positive: true, .. } => s.feedback_positive += 1,
                    EventKind::Feedback {
                        positive: false, ..
                    } => s.feedback_negative += 1,
                    _ => {}
                }
            }
            Ok(s)
        })
        .await?;
    Ok(ApiJson(stats))
}
