//! The `x-transport` header every users response carries: which path the body took to the
//! client. Below both the body's response (`payload`) and the request span that records it
//! (`telemetry`).

use std::fmt;

/// Header naming the path the body took: see [`Transport`].
pub const TRANSPORT_HEADER: &str = "x-transport";

/// How a body reached the client, sent as [`TRANSPORT_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// Fetched from users-service over HTTP/JSON.
    Api,
    /// Passed through shared memory, asked for over the control channel.
    Shm,
    /// Passed through shared memory, asked for over HTTP, which carried the handle back (the
    /// seed's design, behind `--http-signal`).
    ShmHttp,
    /// Asked for shared memory, served over HTTP because shared memory was unavailable and
    /// `--shm-fallback-to-api` is on.
    ApiFallback,
    /// Served from a body serialized once and kept (benchmark ceiling).
    Cached,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Transport::Api,
        Transport::Shm,
        Transport::ShmHttp,
        Transport::ApiFallback,
        Transport::Cached,
    ];

    /// The transport a header value names, as [`Transport::as_str`] writes it.
    pub fn parse(value: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|transport| transport.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Api => "api",
            Transport::Shm => "shm",
            Transport::ShmHttp => "shm-http",
            Transport::ApiFallback => "api-fallback",
            Transport::Cached => "cached",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}
