//! The `x-transport` header every body the services serve carries: which path the body took to
//! the client. Below both the body's response (`payload`, the gateway's proxied responses) and
//! the request span that records it (`telemetry`).

use std::fmt;

use shmbridge::control::Tier;

/// Header naming the path the body took: see [`Transport`].
pub const TRANSPORT_HEADER: &str = "x-transport";

/// How a body reached the client, sent as [`TRANSPORT_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// Fetched from the upstream over HTTP.
    Api,
    /// Published into shared memory, tier not named: users-service's own label for what it
    /// publishes (the gateway names the tier that carried the body, below).
    Shm,
    /// Asked for over the control channel, carried inline in the answer message.
    ShmInline,
    /// Asked for over the control channel, carried in a slot of the segment.
    ShmSlot,
    /// Asked for over the control channel, carried in a sealed memfd.
    ShmSealed,
    /// Passed through shared memory, asked for over HTTP, which carried the handle back (the
    /// seed's design, behind `--http-signal`).
    ShmHttp,
    /// Asked for over shared memory, served over HTTP because shared memory could not serve it
    /// (`--transport auto`, `--shm-fallback-to-api`).
    ApiFallback,
    /// Served from a body the gateway made or received once and kept (benchmark ceiling).
    Cached,
    /// Served from a body the producer published as an object version, kept by the gateway
    /// and still current on the producer's version board: nothing was asked of the producer.
    ShmPublished,
    /// As [`Transport::ShmPublished`] while the producer is unreachable (`--stale-if-error`):
    /// current on the board as the producer left it.
    ShmStale,
}

impl Transport {
    pub const ALL: [Transport; 10] = [
        Transport::Api,
        Transport::Shm,
        Transport::ShmInline,
        Transport::ShmSlot,
        Transport::ShmSealed,
        Transport::ShmHttp,
        Transport::ApiFallback,
        Transport::Cached,
        Transport::ShmPublished,
        Transport::ShmStale,
    ];

    /// The transport a header value names, as [`Transport::as_str`] writes it.
    pub fn parse(value: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|transport| transport.as_str() == value)
    }

    /// The transport of a body the control channel carried in `tier`.
    pub fn of_tier(tier: Tier) -> Transport {
        match tier {
            Tier::Inline => Transport::ShmInline,
            Tier::Slot => Transport::ShmSlot,
            Tier::Sealed => Transport::ShmSealed,
        }
    }

    /// Whether the body travelled through shared memory (any tier, either signal).
    pub fn is_shm(self) -> bool {
        matches!(
            self,
            Transport::Shm
                | Transport::ShmInline
                | Transport::ShmSlot
                | Transport::ShmSealed
                | Transport::ShmHttp
                | Transport::ShmPublished
                | Transport::ShmStale
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Api => "api",
            Transport::Shm => "shm",
            Transport::ShmInline => "shm-inline",
            Transport::ShmSlot => "shm-slot",
            Transport::ShmSealed => "shm-sealed",
            Transport::ShmHttp => "shm-http",
            Transport::ApiFallback => "api-fallback",
            Transport::Cached => "cached",
            Transport::ShmPublished => "shm-published",
            Transport::ShmStale => "shm-stale",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_reads_back_from_its_header_value() {
        for transport in Transport::ALL {
            assert_eq!(Transport::parse(transport.as_str()), Some(transport));
        }
        assert_eq!(Transport::parse("shm-elsewhere"), None);
        for tier in Tier::ALL {
            let transport = Transport::of_tier(tier);
            assert!(transport.is_shm());
            assert_eq!(transport.as_str(), format!("shm-{}", tier.as_str()));
        }
    }
}
