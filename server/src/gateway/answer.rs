//! The gateway's answer to one forwarded request, whichever transport carried it: the verified
//! answer ([`Proxied`]), the transport, where its time went, and the memory its body holds in
//! the gateway's budget until it is written; and what the client may be sent ([`Expect`]).

use axum::response::Response as HttpResponse;

use crate::api_error::ApiError;
use crate::memory_budget::Reservation;
use crate::transport_header::Transport;

use super::proxied_response::Proxied;
use super::published_objects::PublishedAs;
use super::stage_timing::Stages;

/// An answer, the transport that carried it, where its time went, and the memory its body
/// holds in the gateway's budget until it is written.
#[derive(Debug)]
pub struct Answer {
    pub proxied: Proxied,
    pub transport: Transport,
    pub stages: Stages,
    pub reservation: Reservation,
    /// The object version the producer published the body as, if it named one.
    pub published: Option<PublishedAs>,
}

/// What the client may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Whatever the upstream answers, status and all (the reverse proxy).
    AnyAnswer,
    /// A users body: a 200, over REST with users-service's `x-payload-crc32`; any other status
    /// becomes the gateway's error for it (the seed's `/api/users-via-*` routes).
    UsersBody,
}

impl Answer {
    pub(super) fn expecting(self, expect: Expect) -> Result<Answer, ApiError> {
        match expect {
            Expect::AnyAnswer => Ok(self),
            Expect::UsersBody => Ok(Answer {
                proxied: self.proxied.ok_or_error()?,
                ..self
            }),
        }
    }

    /// The response to send ([`Proxied::into_held_response`]) with the stages' `Server-Timing`.
    pub fn into_response(self) -> HttpResponse {
        let mut response = self
            .proxied
            .into_held_response(self.transport, self.reservation);
        self.stages.report(&mut response);
        response
    }
}
