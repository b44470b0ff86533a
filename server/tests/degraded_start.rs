//! users-service that cannot create its segment still starts: REST works, the shared-memory
//! routes and its `/readyz` answer 503 naming the creation error, and a gateway in front of it
//! answers 503 with that reason on the shm route while the REST route keeps working.

mod common;

use axum::http::StatusCode;
use clap::Parser;
use common::{error_message, gateway, get, serve_in_background};
use shmbridge_server::users_service;

#[tokio::test]
async fn a_gateway_answers_503_with_the_reason_and_keeps_serving_rest() {
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
    let gateway = gateway(&upstream, &["--deadline", "2s"]);

    let expected = format!(
        "cannot create the shared-memory segment at {}",
        path.display()
    );
    let (status, _, body) = get(&gateway, "/api/users-via-shm?count=3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = error_message(&body);
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");

    let (status, _, _) = get(&gateway, "/api/users-via-api?count=3").await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let readiness = String::from_utf8_lossy(&body).into_owned();
    assert!(readiness.contains(&expected), "{readiness}");
}
