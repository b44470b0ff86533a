//! What tests share (feature `testing`, and this crate's own unit tests): the checker behind the
//! `request_params` fuzz target, so that `cargo test` replays its seeds and regressions too, and
//! one in-process round trip through a router.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use tower::ServiceExt;

use crate::api_error::ApiError;
use crate::dataset::MAX_COUNT;
use crate::query::UsersQuery;

/// Parses `raw` as the query string of a users route (both services share the parser) and checks
/// the outcome: a valid request never carries a `count` above [`MAX_COUNT`] and reads back from
/// its canonical form unchanged; an invalid one becomes a 400 whose body is a JSON object with a
/// non-empty `error` string and the code `bad_query`.
///
/// # Panics
/// When either promise is broken.
pub fn check_query_text(raw: &str) {
    match UsersQuery::parse(Some(raw)) {
        Ok(query) => {
            assert!(
                query.count <= MAX_COUNT,
                "count {} above the cap",
                query.count
            );
            assert_eq!(
                UsersQuery::parse(Some(&query.to_query_string())),
                Ok(query),
                "canonical form does not read back"
            );
        }
        Err(error) => {
            let response = ApiError::from(error).into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "error body is not JSON"
            );
            let body = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(axum::body::to_bytes(response.into_body(), 64 * 1024))
                .expect("error body within 64 KiB");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("error body parses");
            let message = json["error"].as_str().expect("an error string");
            assert!(!message.is_empty());
            assert_eq!(json["code"], "bad_query", "the stable code");
        }
    }
}

/// Sends `request` through `app` in process and reads the whole answer (a body of up to
/// 16 MiB).
///
/// # Panics
/// When the router fails or the body cannot be read.
pub async fn respond(app: Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, headers, body)
}
