//! The iceoryx2 side of the comparison, shared by client and server: one request-response
//! service type (`[u8]` requests and responses, the response's crc32 in a `u32` user header),
//! the event services that wake a sleeping peer, and the two halves of a verified round trip.
//!
//! iceoryx2 request-response has no wake-up of its own: a port either polls, or is told by an
//! event service that something arrived. Both are measured ([`crate::bench`]).

use std::fmt::Debug;

use anyhow::{Result, anyhow, bail};
use iceoryx2::node::Node;
use iceoryx2::pending_response::PendingResponse;
use iceoryx2::port::client::Client;
use iceoryx2::port::server::Server;
use iceoryx2::prelude::*;
use iceoryx2::response::Response;
use iceoryx2::service::port_factory::{event, request_response};

use crate::wire;

/// A request-response service: 8-byte requests naming a size, responses of that many payload
/// bytes whose crc32 travels in the user header.
pub type RrService = request_response::PortFactory<ipc::Service, [u8], (), [u8], u32>;
pub type RrServer = Server<ipc::Service, [u8], (), [u8], u32>;
pub type RrClient = Client<ipc::Service, [u8], (), [u8], u32>;
pub type RrPending = PendingResponse<ipc::Service, [u8], (), [u8], u32>;
pub type RrResponse = Response<ipc::Service, [u8], u32>;
pub type EventService = event::PortFactory<ipc::Service>;

/// iceoryx2's errors as an error with `what` failed.
pub fn ice<T, E: Debug>(result: Result<T, E>, what: &str) -> Result<T> {
    result.map_err(|error| anyhow!("iceoryx2: {what}: {error:?}"))
}

/// A node of the default (inter-process) service type; iceoryx2 logs errors only, unless
/// `IOX2_LOG_LEVEL` says otherwise.
pub fn node() -> Result<Node<ipc::Service>> {
    set_log_level_from_env_or(LogLevel::Error);
    ice(NodeBuilder::new().create::<ipc::Service>(), "create a node")
}

fn service_name(name: &str) -> Result<ServiceName> {
    ice(ServiceName::new(name), "service name")
}

/// Creates the request-response service `name` (the server's side does this, before the
/// client opens it).
pub fn create_rr(node: &Node<ipc::Service>, name: &str) -> Result<RrService> {
    ice(
        node.service_builder(&service_name(name)?)
            .request_response::<[u8], [u8]>()
            .response_user_header::<u32>()
            .max_clients(1)
            .max_servers(1)
            .create(),
        "create the request-response service",
    )
}

/// Opens the request-response service `name`.
pub fn open_rr(node: &Node<ipc::Service>, name: &str) -> Result<RrService> {
    ice(
        node.service_builder(&service_name(name)?)
            .request_response::<[u8], [u8]>()
            .response_user_header::<u32>()
            .open(),
        "open the request-response service",
    )
}

/// Creates the event service `name`.
pub fn create_event(node: &Node<ipc::Service>, name: &str) -> Result<EventService> {
    ice(
        node.service_builder(&service_name(name)?).event().create(),
        "create an event service",
    )
}

/// Opens the event service `name`.
pub fn open_event(node: &Node<ipc::Service>, name: &str) -> Result<EventService> {
    ice(
        node.service_builder(&service_name(name)?).event().open(),
        "open an event service",
    )
}

/// A server whose responses hold up to `max_size` bytes in one chunk, so that no measured
/// response reallocates its data segment.
pub fn server(service: &RrService, max_size: usize) -> Result<RrServer> {
    ice(
        service
            .server_builder()
            .initial_max_slice_len(max_size)
            .allocation_strategy(AllocationStrategy::Static)
            .create(),
        "create the server",
    )
}

/// A client for 8-byte requests.
pub fn client(service: &RrService) -> Result<RrClient> {
    ice(
        service
            .client_builder()
            .initial_max_slice_len(8)
            .allocation_strategy(AllocationStrategy::Static)
            .create(),
        "create the client",
    )
}

/// The server's half: answers one waiting request, if any, with the first `size` bytes of
/// `payload` written into a loaned response, their crc32 (computed over the written shared
/// memory) in its header. Returns whether there was a request.
pub fn answer_one(server: &RrServer, payload: &[u8]) -> Result<bool> {
    let Some(request) = ice(server.receive(), "receive a request")? else {
        return Ok(false);
    };
    let size = wire::decode_request(request.payload(), payload.len())?;
    let response = ice(request.loan_slice_uninit(size), "loan a response")?;
    let mut response = response.write_from_slice(&payload[..size]);
    *response.user_header_mut() = crc32fast::hash(response.payload());
    ice(response.send(), "send the response")?;
    Ok(true)
}

/// The client's half, first step: asks for `size` bytes.
pub fn ask(client: &RrClient, size: usize) -> Result<RrPending> {
    let request = ice(client.loan_slice_uninit(8), "loan a request")?;
    let request = request.write_from_slice(&wire::encode_request(size));
    ice(request.send(), "send the request")
}

/// The client's half, last step: the response's crc32 over the bytes as received, against the
/// one the server computed, then its length and edges against `expected`.
pub fn verify(response: &RrResponse, expected: &[u8]) -> Result<()> {
    let body = response.payload();
    let crc = crc32fast::hash(body);
    let sent = *response.user_header();
    if crc != sent {
        bail!(
            "iceoryx2 response of {} bytes: crc32 {crc:08x}, the server sent {sent:08x}",
            body.len()
        );
    }
    wire::check_body(body, expected)
}
