//! In-process helpers for the gateway tests: a users-service (real or fake) served on an
//! ephemeral loopback port inside the test's runtime, and a gateway router pointed at it.

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use clap::Parser;
use shmbridge_server::{gateway, users_service};

/// Serves `router` on 127.0.0.1:0 until the test's runtime ends; returns its base URL.
pub async fn serve_in_background(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// A real users-service (small segment: 8 slots of 512 KiB) on an ephemeral port.
pub async fn users_service(extra: &[&str]) -> String {
    let defaults = ["users-service", "--slot-count", "8"];
    let args = users_service::Args::try_parse_from(defaults.iter().chain(extra)).unwrap();
    let state = users_service::AppState::new(&args).unwrap();
    serve_in_background(users_service::app(state)).await
}

/// A gateway router for `upstream` with `extra` flags.
pub fn gateway(upstream: &str, extra: &[&str]) -> Router {
    gateway_with_admin(upstream, extra).0
}

/// A gateway router for `upstream` with `extra` flags, and its operators' router (the routes of
/// `--admin-listen`) over the same state.
pub fn gateway_with_admin(upstream: &str, extra: &[&str]) -> (Router, Router) {
    let defaults = ["gateway", "--upstream", upstream];
    let args = gateway::Args::try_parse_from(defaults.iter().chain(extra)).unwrap();
    let state = gateway::AppState::new(&args).unwrap();
    (gateway::app(state.clone()), gateway::admin_app(state))
}

pub async fn get(app: &Router, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    shmbridge_server::testing::respond(app.clone(), request).await
}

pub fn error_message(body: &Bytes) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["error"].as_str().unwrap().to_owned()
}

/// The stable `code` of an error body.
pub fn error_code(body: &Bytes) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["code"].as_str().unwrap().to_owned()
}

/// Asserts that none of `details` (paths, socket names, errno text...) appears in `body`.
pub fn assert_no_leak(body: &Bytes, details: &[&str]) {
    let text = String::from_utf8_lossy(body);
    for detail in details {
        assert!(!text.contains(detail), "{detail:?} leaked into {text}");
    }
}

/// users-service's default slot size (`--slot-size`), which [`users_service`] keeps.
pub const DEFAULT_SLOT_SIZE: usize = 512 << 10;

/// The `x-transport` of a body of `len` bytes asked for over the control channel of a
/// users-service with slots of `slot_size` bytes: the producer puts it inline up to the default
/// inline threshold, in a slot up to the slot size, in a sealed memfd above.
pub fn expected_shm_transport(len: usize, slot_size: usize) -> &'static str {
    if len <= shmbridge::control::DEFAULT_INLINE_THRESHOLD {
        "shm-inline"
    } else if len <= slot_size {
        "shm-slot"
    } else {
        "shm-sealed"
    }
}
