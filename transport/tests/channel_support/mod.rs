//! What the control-channel tests share: a handler whose response a test can predict from the
//! request alone ([`Ask`], [`TestHandler`]), a producer whose publications only the channel can
//! free (a TTL no test outlives, no reaper), a served channel with its leak check, unique socket names, and a
//! bounded poll.
//!
//! Every test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use shmbridge::control::{
    ChannelOptions, ClientOptions, Handler, HandlerError, Publication, RequestError, Response,
    ResponseWriter, Tier,
};
use shmbridge::{
    ControlClient, ControlServer, Producer, ProducerOptions, Segment, SegmentConfig, SlotCounts,
    monotonic_now_ns,
};

/// Connect, attach and answer timeouts: generous, since the tests never wait them out when
/// the code under test works.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The slot size of [`producer`]'s segments.
pub const SLOT_SIZE: usize = 4096;
/// The inline threshold of [`channel_options`]: below the slot size, so a test's bodies take
/// every tier (up to 1 KiB inline, up to 4 KiB in a slot, sealed above).
pub const INLINE_THRESHOLD: usize = 1024;
/// A body length that travels in a slot under [`channel_options`].
pub const SLOT_LEN: usize = 2000;

/// `len` bytes drawn from `seed` and `len`: two asks that differ in either get different bytes,
/// so an answer delivered to the wrong request shows.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut random = fastrand::Rng::with_seed(seed.rotate_left(32) ^ len as u64);
    let mut bytes = vec![0; len];
    random.fill(&mut bytes);
    bytes
}

/// How [`TestHandler`] writes a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writing {
    /// `expect_len(len)` first, then the body in one write.
    Expect,
    /// The body in one `write_all`, no size hint.
    Whole,
    /// The body in writes of this many bytes, no size hint: it grows tier by tier.
    Chunks(usize),
}

/// What a test asks [`TestHandler`] for, carried as the request's opaque bytes: a body of
/// [`payload`]`(len, seed)`, written as `writing` says, after `sleep`; with the head of
/// [`test_head`] when `head`; failing (an error, or a panic) once `fail_after` bytes are
/// written, when given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub len: usize,
    pub seed: u64,
    pub writing: Writing,
    pub sleep: Duration,
    pub head: bool,
    pub fail_after: Option<usize>,
    pub panic: bool,
}

impl Ask {
    /// `len` bytes of `seed`, in one write, at once, with the default head.
    pub fn new(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed,
            writing: Writing::Whole,
            sleep: Duration::ZERO,
            head: false,
            fail_after: None,
            panic: false,
        }
    }

    pub fn writing(self, writing: Writing) -> Self {
        Self { writing, ..self }
    }

    pub fn sleep(self, sleep: Duration) -> Self {
        Self { sleep, ..self }
    }

    pub fn with_head(self) -> Self {
        Self { head: true, ..self }
    }

    /// Returns an error once `after` bytes are written.
    pub fn fail_after(self, after: usize) -> Self {
        Self {
            fail_after: Some(after),
            ..self
        }
    }

    /// Panics once `after` bytes are written.
    pub fn panic_after(self, after: usize) -> Self {
        Self {
            fail_after: Some(after),
            panic: true,
            ..self
        }
    }

    /// The body the handler writes.
    pub fn body(&self) -> Vec<u8> {
        payload(self.len, self.seed)
    }

    /// The request's bytes: `ask` and `key=value` words, ASCII.
    pub fn encode(&self) -> Vec<u8> {
        let writing = match self.writing {
            Writing::Expect => "expect".to_owned(),
            Writing::Whole => "whole".to_owned(),
            Writing::Chunks(chunk) => format!("chunks:{chunk}"),
        };
        let mut text = format!(
            "ask len={} seed={} writing={writing} sleep_ms={}",
            self.len,
            self.seed,
            self.sleep.as_millis()
        );
        if self.head {
            text.push_str(" head");
        }
        if let Some(after) = self.fail_after {
            let how = if self.panic { "panic" } else { "fail" };
            text.push_str(&format!(" {how}_after={after}"));
        }
        text.into_bytes()
    }

    /// The ask `bytes` encode, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split(' ');
        if words.next()? != "ask" {
            return None;
        }
        let mut ask = Ask::new(0, 0);
        for word in words {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "len" => ask.len = value.parse().ok()?,
                "seed" => ask.seed = value.parse().ok()?,
                "writing" => {
                    ask.writing = match value.split_once(':') {
                        None if value == "expect" => Writing::Expect,
                        None if value == "whole" => Writing::Whole,
                        Some(("chunks", chunk)) => Writing::Chunks(chunk.parse().ok()?),
                        _ => return None,
                    }
                }
                "sleep_ms" => ask.sleep = Duration::from_millis(value.parse().ok()?),
                "head" => ask.head = true,
                "fail_after" => ask.fail_after = Some(value.parse().ok()?),
                "panic_after" => {
                    ask.fail_after = Some(value.parse().ok()?);
                    ask.panic = true;
                }
                _ => return None,
            }
        }
        Some(ask)
    }

    /// The head the response to this ask carries.
    pub fn expected_head(&self) -> shmbridge::control::ResponseHead {
        let mut head = shmbridge::control::ResponseHead::default();
        if self.head {
            let test = test_head(self);
            head.set_status(test.status).unwrap();
            head.set_content_type(test.content_type).unwrap();
            for (name, value) in &test.headers {
                head.add_header(name, value).unwrap();
            }
        }
        head
    }
}

/// The parts of the head [`TestHandler`] sets for an ask with `head`.
pub struct TestHead {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
}

/// A status other than 200, a content type, and headers that name the ask (one of them empty,
/// one with spaces and a tab, a repeated name).
pub fn test_head(ask: &Ask) -> TestHead {
    TestHead {
        status: 203,
        content_type: "application/x-shmbridge-test; charset=binary",
        headers: vec![
            ("x-len".into(), ask.len.to_string()),
            ("x-seed".into(), ask.seed.to_string()),
            ("x-empty".into(), String::new()),
            ("X-Mixed_Case".into(), "a b\tc ~!".into()),
            ("x-seed".into(), "again".into()),
        ],
    }
}

/// Answers an [`Ask`] as it says; anything else with the handler's own `400` and a short
/// text body (a bad request is the application's answer, not the channel's refusal).
pub struct TestHandler;

impl Handler for TestHandler {
    fn handle(
        &self,
        request: &[u8],
        response: &mut ResponseWriter<'_>,
    ) -> Result<(), HandlerError> {
        let Some(ask) = Ask::decode(request) else {
            response.set_status(400)?;
            response.set_content_type("text/plain")?;
            response.write_all(b"not an ask")?;
            return Ok(());
        };
        std::thread::sleep(ask.sleep);
        if ask.head {
            let head = test_head(&ask);
            response.set_status(head.status)?;
            response.set_content_type(head.content_type)?;
            for (name, value) in &head.headers {
                response.add_header(name, value)?;
            }
        }
        let body = ask.body();
        let fail_at = ask.fail_after.unwrap_or(usize::MAX).min(body.len());
        let chunk = match ask.writing {
            Writing::Expect => {
                response.expect_len(body.len() as u64)?;
                body.len()
            }
            Writing::Whole => body.len(),
            Writing::Chunks(chunk) => chunk,
        };
        let mut written = 0;
        while written < fail_at {
            let end = fail_at.min(written + chunk.max(1));
            response.write_all(&body[written..end])?;
            written = end;
        }
        if ask.fail_after.is_some() {
            if ask.panic {
                panic!("the test handler panics, as asked, after {written} bytes");
            }
            return Err(format!("the test handler fails, as asked, after {written} bytes").into());
        }
        Ok(())
    }
}

/// The tier a body of `len` bytes takes under `inline_threshold` and `slot_size`.
pub fn tier_for(len: usize, inline_threshold: usize, slot_size: usize) -> Tier {
    if len <= inline_threshold {
        Tier::Inline
    } else if len <= slot_size {
        Tier::Slot
    } else {
        Tier::Sealed
    }
}

/// How long the tests' publications wait for their consumer: longer than any test, and below
/// the hour past which the reaper judges a deadline scribbled ([`shmbridge::MAX_DEADLINE_AHEAD`]:
/// a TTL of exactly that, stamped rounded up to the next millisecond, looks corrupt to a reap in
/// the same millisecond, which then takes a fresh publication back).
pub const READY_TTL: Duration = Duration::from_secs(1800);

/// A producer over a new memfd segment of `slots` [`SLOT_SIZE`] slots whose publications wait
/// [`READY_TTL`] for their consumer and which runs no reaper: a slot that comes back unredeemed
/// was freed by the channel, nothing else.
pub fn producer(slots: u32) -> Arc<Producer> {
    producer_with(slots, SLOT_SIZE, ProducerOptions::default())
}

/// [`producer`] of `slots` slots of `slot_size` bytes and `options`, with [`READY_TTL`].
pub fn producer_with(slots: u32, slot_size: usize, options: ProducerOptions) -> Arc<Producer> {
    let segment = Segment::create(&SegmentConfig {
        slot_count: slots,
        slot_size: slot_size as u32,
    })
    .unwrap();
    let options = ProducerOptions {
        ready_ttl: READY_TTL,
        ..options
    };
    Arc::new(Producer::new(Arc::new(segment), options).unwrap())
}

/// The defaults for `producer`'s segment, with [`INLINE_THRESHOLD`].
pub fn channel_options(producer: &Producer) -> ChannelOptions {
    ChannelOptions {
        inline_threshold: INLINE_THRESHOLD,
        ..ChannelOptions::for_segment(producer.segment())
    }
}

/// How the tests' clients connect: [`TIMEOUT`], this uid only.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        timeout: TIMEOUT,
        ..ClientOptions::default()
    }
}

/// A producer serving a channel on a socket of its own.
pub struct Served {
    pub producer: Arc<Producer>,
    pub server: ControlServer,
}

impl Served {
    /// `producer` serving [`TestHandler`] with `options`.
    pub fn new(test: &str, producer: Arc<Producer>, options: ChannelOptions) -> Self {
        Self::with_handler(test, producer, Arc::new(TestHandler), options)
    }

    pub fn with_handler(
        test: &str,
        producer: Arc<Producer>,
        handler: Arc<dyn Handler>,
        options: ChannelOptions,
    ) -> Self {
        let server = ControlServer::spawn_channel(
            Arc::clone(&producer),
            handler,
            options,
            &unique_socket(test),
        )
        .unwrap();
        Self { producer, server }
    }

    pub fn connect(&self) -> ControlClient {
        ControlClient::connect(self.server.socket_name(), &client_options()).unwrap()
    }

    pub fn slots(&self) -> SlotCounts {
        SlotCounts::scan(self.producer.segment())
    }

    /// Every slot free and no sealed byte in flight, within [`TIMEOUT`] (releases travel
    /// asynchronously).
    ///
    /// # Panics
    /// When a slot or a sealed byte is still held then.
    pub fn assert_nothing_leaked(&self) {
        let slots = self.producer.segment().slot_count();
        let start = Instant::now();
        loop {
            let stats = self.producer.stats();
            if stats.slots.free == slots && stats.sealed_bytes_in_flight == 0 {
                return;
            }
            assert!(start.elapsed() < TIMEOUT, "leaked: {stats:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Asks `ask` and waits for its verified response.
pub fn send_ask(client: &ControlClient, ask: &Ask) -> Result<Response, RequestError> {
    client.request(&ask.encode(), TIMEOUT)
}

/// Sends `request` with a deadline [`TIMEOUT`] away and waits at most [`TIMEOUT`] for its
/// publication, unredeemed.
pub fn publication(client: &ControlClient, request: &[u8]) -> Result<Publication, RequestError> {
    publication_within(client, request, TIMEOUT)
}

/// [`publication`] with a deadline `wait` away (still waiting up to [`TIMEOUT`] for the answer,
/// so the producer's refusal at the deadline is not raced by the client giving up).
pub fn publication_within(
    client: &ControlClient,
    request: &[u8],
    wait: Duration,
) -> Result<Publication, RequestError> {
    let deadline_ns = monotonic_now_ns() + wait.as_nanos() as u64;
    let (answered, answer) = mpsc::sync_channel(1);
    client.request_with(request, deadline_ns, move |result| {
        let _ = answered.send(result);
    })?;
    answer
        .recv_timeout(TIMEOUT)
        .expect("an answer within the timeout")
}

/// Asserts `response` is `ask`'s: head, bytes and tier.
pub fn assert_answers(response: &Response, ask: &Ask, tier: Tier) {
    assert_eq!(response.head, ask.expected_head(), "{ask:?}");
    assert_eq!(response.body.tier(), tier, "{ask:?}");
    assert_eq!(response.body.len(), ask.len, "{ask:?}");
    assert!(response.body[..] == ask.body()[..], "{ask:?}: bytes differ");
}

/// An abstract socket name no other test or run uses.
pub fn unique_socket(test: &str) -> String {
    format!(
        "shmbridge-test-channel-{test}-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// Polls `done` about every millisecond until it holds; returns how long that took.
///
/// # Panics
/// When it does not hold within `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A same-uid process speaking the frames by hand: the greeting, then whatever it sends.
pub struct RawPeer(std::os::fd::OwnedFd);

impl RawPeer {
    /// Connects and reads the greeting. No buffer is offered for the descriptor it carries, so
    /// the kernel closes that instead of installing it here.
    pub fn connect(socket_name: &str) -> Self {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, socket,
            sockopt::ReceiveTimeout,
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let timeout = nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as _, 0);
        setsockopt(&fd, ReceiveTimeout, &timeout).unwrap();
        let addr = UnixAddr::new_abstract(socket_name.as_bytes()).unwrap();
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
        let peer = Self(fd);
        let greeting = peer.receive().expect("a greeting");
        assert!(greeting.starts_with(b"SHMB"), "{greeting:02x?}");
        peer
    }

    pub fn send(&self, frame: &[u8]) {
        nix::sys::socket::send(self.raw(), frame, nix::sys::socket::MsgFlags::MSG_NOSIGNAL)
            .unwrap();
    }

    /// Sends `frame` with `fd` attached, which no request may carry.
    pub fn send_with_fd(&self, frame: &[u8], fd: std::os::fd::RawFd) {
        nix::sys::socket::sendmsg::<()>(
            self.raw(),
            &[std::io::IoSlice::new(frame)],
            &[nix::sys::socket::ControlMessage::ScmRights(&[fd])],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .unwrap();
    }

    /// The next message (at most the longest answer), or `None` once the producer closed the
    /// connection.
    pub fn receive(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; shmbridge::control::frame::MAX_ANSWER_FRAME_LEN + 1];
        match nix::sys::socket::recv(self.raw(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
            Ok(0) | Err(nix::errno::Errno::ECONNRESET) => None,
            Ok(len) => {
                buf.truncate(len);
                Some(buf)
            }
            Err(errno) => panic!("receiving from the producer: {errno}"),
        }
    }

    fn raw(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
}
