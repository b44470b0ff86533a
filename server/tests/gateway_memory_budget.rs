//! The gateway's memory budget (`--memory-budget`) against a real in-process users-service: an
//! answer larger than the budget is a clean 503 `gateway_busy` with `Retry-After` on every
//! route that holds a body (REST, the control channel in each tier, the cached route's own
//! serialization), a small one beside it is served, and under a burst of large requests every
//! answer is either the exact body or that 503.

mod common;

use axum::http::{StatusCode, header};
use common::{error_code, gateway, get, users_service};
use shmbridge_server::dataset::users_json;

/// Every route that makes the gateway hold a users body, by its path.
const ROUTES: [&str; 5] = [
    "/api/users-via-api",
    "/api/users-via-shm",
    "/api/users-cached",
    "/via-api/users",
    "/via-shm/users",
];

#[tokio::test]
async fn an_answer_larger_than_the_budget_is_a_503_gateway_busy_and_a_small_one_is_served() {
    let upstream = users_service(&[]).await;
    let gateway = gateway(&upstream, &["--memory-budget", "1048576"]);
    // ~1.1 MB: above the budget, and above a slot (sealed tier); 30 users: the inline tier.
    for (count, seed) in [(3000, 4), (30, 5)] {
        let expected = users_json(count, seed);
        for route in ROUTES {
            let uri = format!("{route}?count={count}&seed={seed}");
            let (status, headers, body) = get(&gateway, &uri).await;
            if expected.len() > 1 << 20 {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
                assert_eq!(error_code(&body), "gateway_busy", "{uri}");
                assert_eq!(headers[header::RETRY_AFTER], "1", "{uri}");
            } else {
                assert_eq!(status, StatusCode::OK, "{uri}");
                assert!(body == expected, "{uri}: body differs from the dataset");
            }
        }
    }
    // A body in a slot (~150 KB) is reserved and given back like any other.
    let expected = users_json(400, 6);
    for route in ROUTES {
        let uri = format!("{route}?count=400&seed=6");
        let (status, _, body) = get(&gateway, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(body == expected, "{uri}: body differs from the dataset");
    }
}

/// 24 requests of ~730 KB at once against a 4 MiB budget: whichever are admitted are served
/// whole and exact, the others refused cleanly, and once the burst is over every route serves
/// again (each reservation was given back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_a_burst_each_answer_is_the_exact_body_or_a_clean_refusal() {
    let upstream = users_service(&[]).await;
    // At most the 4 unredeemed publications users-service allows a peer with 8 slots, so that
    // a refusal here is the budget's; users-service's own `shm_busy` is a clean refusal too,
    // should it see a fifth before it has counted a redemption. A deadline no busy test
    // machine reaches, so that a refusal is never a timeout.
    let gateway = gateway(
        &upstream,
        &[
            "--memory-budget",
            "4194304",
            "--shm-max-in-flight",
            "4",
            "--deadline",
            "60s",
        ],
    );
    let count = 2000;
    let requests = (0..24u64).map(|seed| {
        let gateway = gateway.clone();
        let route = ROUTES[seed as usize % ROUTES.len()];
        tokio::spawn(async move {
            let uri = format!("{route}?count={count}&seed={seed}");
            let (status, _, body) = get(&gateway, &uri).await;
            match status {
                StatusCode::OK => {
                    assert!(body == users_json(count, seed), "{uri}: body differs");
                    true
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    let code = error_code(&body);
                    assert!(
                        ["gateway_busy", "shm_busy"].contains(&code.as_str()),
                        "{uri}: {code}"
                    );
                    false
                }
                status => panic!("{uri}: {status} {body:?}"),
            }
        })
    });
    let mut served = 0;
    for request in requests.collect::<Vec<_>>() {
        served += usize::from(request.await.unwrap());
    }
    eprintln!("{served} of 24 served during the burst");
    for route in ROUTES {
        let uri = format!("{route}?count={count}&seed=99");
        let (status, _, body) = get(&gateway, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri} after the burst");
        assert!(body == users_json(count, 99), "{uri}: body differs");
    }
}

/// users-service's making budget, through the gateway: a body whose bound is past it is
/// refused before any work on every path users-service makes bodies on (REST, the control
/// channel's direct answers, `/blobs`), the seed routes as the gateway's `upstream_busy` and
/// forwarded requests as users-service's own 503, `Retry-After` kept; a small body is made.
#[tokio::test]
async fn a_body_past_users_services_making_budget_is_refused_before_it_is_made() {
    let upstream = users_service(&["--making-budget", "1048576"]).await;
    let gateway = gateway(&upstream, &[]);
    for (uri, code) in [
        ("/api/users-via-api?count=3000", "upstream_busy"),
        ("/api/users-via-shm?count=3000", "upstream_busy"),
        ("/via-api/users?count=3000", "users_service_busy"),
        ("/via-shm/users?count=3000", "users_service_busy"),
        ("/via-api/blobs?size=2000000", "users_service_busy"),
        ("/via-shm/blobs?size=2000000", "users_service_busy"),
    ] {
        let (status, headers, body) = get(&gateway, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(error_code(&body), code, "{uri}");
        assert_eq!(headers[header::RETRY_AFTER], "1", "{uri}");
    }
    let expected = users_json(30, 1);
    for route in ROUTES {
        let uri = format!("{route}?count=30&seed=1");
        let (status, _, body) = get(&gateway, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(body == expected, "{uri}: body differs from the dataset");
    }
}
