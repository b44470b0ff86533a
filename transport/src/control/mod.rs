//! The control channel: how a consumer asks a producer for responses over the same socket that
//! handed it the segment, instead of over HTTP. Frames are specified in [`frame`]; the producer's
//! side is [`ControlServer`] running an application's [`Handler`], which writes each response
//! into a [`ResponseWriter`]; the consumer's side is [`ControlClient`], which hands back a
//! verified [`Response`]; [`PeerLedger`] is the producer's record of which peer holds which
//! unredeemed publication.

pub mod frame;

mod body;
mod client;
pub(crate) mod head;
mod ledger;
mod log_throttle;
mod response;
mod server;

pub use body::{Body, Response};
pub use client::{
    AnswerReader, ClientOptions, ControlClient, ProtocolError, Publication, RequestError,
};
pub use frame::{Refusal, RefusalCode, ResponseHead, Tier};
pub use ledger::{PeerLedger, PublicationLimits, Reservation};
pub use response::{Handler, HandlerError, ResponseWriter};
pub use server::{ChannelOptions, ControlServer, DEFAULT_INLINE_THRESHOLD, MAX_THREADS_PER_PEER};
