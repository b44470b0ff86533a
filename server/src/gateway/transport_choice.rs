//! Which transport a forwarded request (and `GET /api/users`) takes (`--transport`): always
//! REST, always shared memory, or, under `auto`, shared memory with REST as the fallback
//! whenever shared memory cannot serve it. There is no size guess: the gateway asks over shared
//! memory and the producer picks the tier (inline, slot, sealed) from the body's actual size. A
//! `HEAD` under `auto` goes over REST: it has no body to move, and only an HTTP answer is sure
//! to carry the length of the body it describes.

/// `--transport`: how forwarded requests and `GET /api/users` reach the upstream.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// Always over HTTP.
    Api,
    /// Always through shared memory; its failures are the client's errors.
    Shm,
    /// Through shared memory, the producer choosing the tier; over REST when shared memory
    /// is unavailable or busy, or cannot carry the request (`x-transport: api-fallback`).
    Auto,
}

/// The route one request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Api,
    Shm { fallback_to_api: bool },
}

impl TransportChoice {
    /// The route for a request (`head_request`: a `HEAD`), counted in
    /// `transport_choices_total{choice, reason}` (`reason`: `forced` under `api` and `shm`,
    /// `auto` under `auto`, `head` for a `HEAD` under `auto`).
    pub fn route(self, head_request: bool) -> Route {
        let (route, reason) = match self {
            TransportChoice::Auto if head_request => (Route::Api, "head"),
            TransportChoice::Api => (Route::Api, "forced"),
            TransportChoice::Shm => (
                Route::Shm {
                    fallback_to_api: false,
                },
                "forced",
            ),
            TransportChoice::Auto => (
                Route::Shm {
                    fallback_to_api: true,
                },
                "auto",
            ),
        };
        let chosen = match route {
            Route::Api => "api",
            Route::Shm { .. } => "shm",
        };
        metrics::counter!("transport_choices_total", "choice" => chosen, "reason" => reason)
            .increment(1);
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_asks_shared_memory_with_a_fallback_and_forced_choices_have_none() {
        assert_eq!(
            TransportChoice::Auto.route(false),
            Route::Shm {
                fallback_to_api: true
            }
        );
        for head_request in [false, true] {
            assert_eq!(
                TransportChoice::Shm.route(head_request),
                Route::Shm {
                    fallback_to_api: false
                }
            );
            assert_eq!(TransportChoice::Api.route(head_request), Route::Api);
        }
        assert_eq!(TransportChoice::Auto.route(true), Route::Api);
    }
}
