//! The control channel: how a consumer asks a producer for publications over the same socket
//! that handed it the segment, instead of over HTTP. Frames are specified in [`frame`]; the
//! producer's side is [`ControlServer`], the consumer's [`ControlClient`]; [`PeerLedger`] is the
//! producer's record of which peer holds which unredeemed publication.

pub mod frame;

mod client;
mod ledger;
mod server;

pub use client::{AnswerReader, ControlClient, ProtocolError, Publication, RequestError};
pub use frame::{Answer, PublishRequest, Refusal, RefusalCode, Request};
pub use ledger::{PeerLedger, PublicationLimits, Reservation};
pub use server::{
    ChannelOptions, ControlServer, MAX_THREADS_PER_PEER, Published, Publisher, publish_bytes,
};
