//! A producer with a handler of its own and a consumer moving its own bytes: the README's
//! usage example, run by `cargo test` (transport/tests/readme_example.rs).
use std::{io::Write, sync::Arc, time::Duration};

use shmbridge::control::{ChannelOptions, ClientOptions, ControlClient, ControlServer};
use shmbridge::control::{HandlerError, ResponseWriter};
use shmbridge::{Producer, ProducerOptions, Segment, SegmentConfig};

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The service: a segment, and a handler that answers "N" with N bytes.
    let segment = Arc::new(Segment::create(&SegmentConfig::default())?);
    let producer = Arc::new(Producer::new(segment, ProducerOptions::default())?);
    let handler = |request: &[u8], out: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
        let size: u64 = std::str::from_utf8(request)?.parse()?;
        out.set_content_type("application/octet-stream")?;
        out.expect_len(size)?;
        out.write_all(&vec![b'x'; size as usize])?;
        Ok(())
    };
    let options = ChannelOptions::for_segment(producer.segment());
    let socket = format!("own-service-{}", std::process::id());
    let _server = ControlServer::spawn_channel(producer, Arc::new(handler), options, &socket)?;

    // The gateway, usually another process: attach through the socket, ask, get verified bytes.
    let client = ControlClient::connect(&socket, &ClientOptions::default())?;
    for size in [100, 100_000, 5_000_000] {
        let response = client.request(size.to_string().as_bytes(), Duration::from_secs(2))?;
        assert_eq!(response.body.len(), size);
        println!("{size} bytes, {}", response.body.tier().as_str());
    }
    Ok(())
}
