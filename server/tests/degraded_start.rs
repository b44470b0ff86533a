//! users-service that cannot create its segment still starts: REST works, the shared-memory
//! routes answer 503 and its `/readyz` names the creation error; a gateway in front of it
//! answers 503 `shm_unavailable` on the shm route, without the path or errno, while the REST
//! route keeps working, and tells operators the reason on its `/status`.

mod common;

use axum::http::StatusCode;
use clap::Parser;
use common::{
    assert_no_leak, error_code, error_message, gateway_with_admin, get, serve_in_background,
};
use shmbridge_server::users_service;

#[tokio::test]
async fn a_gateway_answers_503_without_the_cause_keeps_serving_rest_and_tells_operators() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-directory").join("segment");
    let users = users_service::Args::try_parse_from([
        "users-service",
        "--shm-path",
        path.to_str().unwrap(),
    ])
    .unwrap();
    let upstream = serve_in_background(users_service::app(
        users_service::AppState::new(&users).unwrap(),
    ))
    .await;
    let (gateway, admin) = gateway_with_admin(&upstream, &["--deadline", "2s"]);

    let shown = path.display().to_string();
    let leaks = [shown.as_str(), "No such file", "os error"];
    let (status, _, body) = get(&gateway, "/api/users-via-shm?count=3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "shm_unavailable");
    assert_eq!(error_message(&body), "shared memory is unavailable");
    assert_no_leak(&body, &leaks);

    let (status, _, _) = get(&gateway, "/api/users-via-api?count=3").await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let readiness: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(readiness["shm"], "unavailable");
    assert_eq!(readiness["upstream"], "reachable");
    assert_no_leak(&body, &leaks);

    // Operators learn why, from users-service's /readyz and the gateway's /status.
    let (status, _, body) = get(&admin, "/status").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let detail: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let problem = detail["shm"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("users-service has no shared-memory segment"),
        "{problem}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let users_readiness = http.get(format!("{upstream}/readyz")).send().await.unwrap();
    let reason = users_readiness.text().await.unwrap();
    assert!(
        reason.contains(&format!(
            "cannot create the shared-memory segment at {shown}"
        )),
        "{reason}"
    );
}
