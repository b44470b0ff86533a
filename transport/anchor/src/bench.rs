//! The parent process: starts the child, connects to each of its servers, and measures request
//! → verified bytes for every size and transport, interleaved in rounds so that whatever the
//! machine does meanwhile hits every transport alike.
//!
//! One round trip, per transport (the clock runs from before the request until the response
//! has been verified, read and dropped):
//!
//! - **shmbridge**: [`ControlClient::request`] with 8 bytes naming the size; the channel checks
//!   the body's crc32 against the one the producer computed as it wrote; then the status, the
//!   length and the first and last 8 bytes are compared with the payload.
//! - **iceoryx2 spin / event**: an 8-byte request loaned and sent; the server loans a response,
//!   writes the payload, puts the crc32 of the written bytes in the header; the client computes
//!   the crc32 of the bytes it received, compares, then length and edges as above. *spin*: both
//!   sides busy-poll (iceoryx2's own benchmarks do); *event*: each side sleeps on an iceoryx2
//!   event listener and the other notifies it (what a service that does not burn a core does).
//! - **floor**: a [`FLOOR_LEN`]-byte message over `SOCK_SEQPACKET` and back.
//! - **inherent**, in this process: one memcpy of the payload and two crc32 passes over the copy
//!   (the producer's and the consumer's), the work any verified transport of these bytes does.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use iceoryx2::node::Node;
use iceoryx2::prelude::ipc;
use shmbridge::control::{ClientOptions, ControlClient};

use crate::ice::{self, ice};
use crate::wire::{self, CTL_DONE, CTL_IDLE, CTL_SPIN, FLOOR_LEN, Names, READY_LINE};

/// How long one round trip may take before the run fails.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// What is measured, in the order of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Shmbridge,
    IceoryxSpin,
    IceoryxEvent,
    Floor,
    Inherent,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Shmbridge => "shmbridge",
            Transport::IceoryxSpin => "iceoryx2 spin",
            Transport::IceoryxEvent => "iceoryx2 event",
            Transport::Floor => "floor (SEQPACKET 56 B)",
            Transport::Inherent => "inherent (memcpy + 2 crc32)",
        }
    }
}

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sizes: Vec<usize>,
    /// What to measure, each once (all five for the report's ratios and targets).
    pub transports: Vec<Transport>,
    /// Round trips per transport for each size below `large_from`, and from it on.
    pub iterations: usize,
    pub large_iterations: usize,
    pub large_from: usize,
    /// Unmeasured round trips per transport before a size's first round, as a fraction of its
    /// round trips.
    pub warmup_fraction: f64,
    /// Round trips of one transport in a row; the transports take turns, in an order rotated
    /// every round.
    pub batch: usize,
    pub client_cpu: usize,
    pub server_cpu: usize,
}

impl Plan {
    fn iterations_for(&self, size: usize) -> usize {
        if size >= self.large_from {
            self.large_iterations
        } else {
            self.iterations
        }
    }
}

/// One size's results.
pub struct SizeResult {
    pub size: usize,
    pub histograms: Vec<(Transport, Histogram<u64>)>,
    /// The tiers that carried shmbridge's bodies of this size.
    pub tiers: BTreeSet<&'static str>,
}

impl SizeResult {
    pub fn histogram(&self, transport: Transport) -> Option<&Histogram<u64>> {
        self.histograms
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, h)| h)
    }
}

/// Runs the whole plan against a child started from this executable.
pub fn run(plan: &Plan) -> Result<Vec<SizeResult>> {
    let Some(&max_size) = plan.sizes.iter().max() else {
        bail!("no sizes to measure");
    };
    wire::pin_to_cpu(plan.client_cpu)?;
    let names = Names::new(&format!("shmbridge-anchor-{}", std::process::id()));
    let mut child = ChildGuard::start(&names, max_size, plan.server_cpu)?;
    let measured = Peers::connect(&names, max_size).and_then(|mut peers| {
        plan.sizes
            .iter()
            .map(|&size| measure_size(&mut peers, plan, size))
            .collect::<Result<Vec<_>>>()
    });
    // The peers are dropped by now: the side channel is closed, and the child exits.
    let exited = child.finish();
    match (measured, exited) {
        (Ok(results), Ok(())) => Ok(results),
        (Ok(_), Err(child_error)) => Err(child_error),
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(child_error)) => Err(error.context(format!("{child_error:#}"))),
    }
}

fn measure_size(peers: &mut Peers, plan: &Plan, size: usize) -> Result<SizeResult> {
    let iterations = plan.iterations_for(size);
    let batch = plan.batch.clamp(1, iterations.max(1));
    let warmup = ((iterations as f64 * plan.warmup_fraction) as usize).max(batch);
    peers.tiers.clear();
    for &transport in &plan.transports {
        peers.enter(transport)?;
        for _ in 0..warmup {
            peers.round_trip(transport, size)?;
        }
        peers.leave(transport)?;
    }
    let mut histograms = Vec::new();
    for &transport in &plan.transports {
        let histogram = Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .context("create a latency histogram")?;
        histograms.push((transport, histogram));
    }
    let rounds = iterations.div_ceil(batch);
    for round in 0..rounds {
        let in_round = batch.min(iterations - round * batch);
        for turn in 0..histograms.len() {
            let index = (round + turn) % histograms.len();
            let (transport, histogram) = &mut histograms[index];
            peers.enter(*transport)?;
            for _ in 0..in_round {
                let start = Instant::now();
                peers.round_trip(*transport, size)?;
                histogram.saturating_record(start.elapsed().as_nanos() as u64);
            }
            peers.leave(*transport)?;
        }
    }
    Ok(SizeResult {
        size,
        histograms,
        tiers: peers.tiers.clone(),
    })
}

/// The child process, killed if the run ends before [`ChildGuard::finish`].
struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Starts `serve` and waits for its ready line.
    fn start(names: &Names, max_size: usize, cpu: usize) -> Result<Self> {
        let exe = std::env::current_exe().context("find this executable")?;
        let child = Command::new(exe)
            .args(["serve", "--name", names.base()])
            .args([
                "--max-size",
                &max_size.to_string(),
                "--cpu",
                &cpu.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the child server")?;
        let mut guard = Self { child: Some(child) };
        let stdout = guard
            .child
            .as_mut()
            .and_then(|child| child.stdout.take())
            .context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == READY_LINE => return Ok(guard),
                Some(Ok(line)) => eprintln!("child: {line}"),
                Some(Err(error)) => return Err(error).context("read the child's stdout"),
                None => {
                    let status = guard.wait_briefly();
                    bail!("the child server exited before it was ready ({status})");
                }
            }
        }
    }

    /// Waits for the child to exit (the side channel is closed by now) and checks its status;
    /// kills it if it has not exited within `patience`.
    fn finish(&mut self) -> Result<()> {
        self.finish_within(Duration::from_secs(10))
    }

    fn finish_within(&mut self, patience: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().context("wait for the child")? {
                if !status.success() {
                    bail!("the child server failed ({status})");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the child server did not exit after the side channel closed; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_briefly(&mut self) -> String {
        match self.finish() {
            Ok(()) => "exit status 0".into(),
            Err(error) => format!("{error:#}"),
        }
    }
}

impl Drop for ChildGuard {
    /// On an early return the side channel closed first (the peers are dropped before this), so
    /// the child is given a moment to exit cleanly (iceoryx2 removes its resources then) before
    /// it is killed.
    fn drop(&mut self) {
        let _ = self.finish_within(Duration::from_secs(2));
    }
}

/// The parent's end of every transport, and what a round trip needs.
struct Peers {
    payload: Vec<u8>,
    copy: Vec<u8>,
    shmbridge: ControlClient,
    spin: ice::RrClient,
    event: ice::RrClient,
    request_notifier: iceoryx2::port::notifier::Notifier<ipc::Service>,
    response_listener: iceoryx2::port::listener::Listener<ipc::Service>,
    side: OwnedFd,
    floor: OwnedFd,
    tiers: BTreeSet<&'static str>,
    // Dropped last: the ports above belong to these services and this node.
    _services: (
        ice::RrService,
        ice::RrService,
        ice::EventService,
        ice::EventService,
    ),
    _node: Node<ipc::Service>,
}

impl Peers {
    fn connect(names: &Names, max_size: usize) -> Result<Self> {
        let side = wire::connect_seqpacket(&names.side_socket())?;
        let floor = wire::connect_seqpacket(&names.side_socket())?;
        let shmbridge =
            ControlClient::connect(&names.shmbridge_socket(), &ClientOptions::default())
                .context("connect to the child's shmbridge channel")?;
        let node = ice::node()?;
        let spin_service = ice::open_rr(&node, &names.iceoryx_spin())?;
        let event_service = ice::open_rr(&node, &names.iceoryx_event())?;
        let requests = ice::open_event(&node, &names.iceoryx_request_event())?;
        let responses = ice::open_event(&node, &names.iceoryx_response_event())?;
        Ok(Self {
            payload: wire::payload(max_size),
            copy: vec![0; max_size],
            shmbridge,
            spin: ice::client(&spin_service)?,
            event: ice::client(&event_service)?,
            request_notifier: ice(requests.notifier_builder().create(), "create a notifier")?,
            response_listener: ice(responses.listener_builder().create(), "create a listener")?,
            side,
            floor,
            tiers: BTreeSet::new(),
            _services: (spin_service, event_service, requests, responses),
            _node: node,
        })
    }

    /// Before a batch of `transport`: the busy-polling server starts polling.
    fn enter(&mut self, transport: Transport) -> Result<()> {
        match transport {
            Transport::IceoryxSpin => self.command(CTL_SPIN),
            _ => Ok(()),
        }
    }

    /// After a batch of `transport`: the busy-polling server goes back to sleep.
    fn leave(&mut self, transport: Transport) -> Result<()> {
        match transport {
            Transport::IceoryxSpin => self.command(CTL_IDLE),
            _ => Ok(()),
        }
    }

    fn command(&mut self, command: u8) -> Result<()> {
        wire::send_message(&self.side, &[command])?;
        let mut reply = [0u8; 1];
        match wire::receive_message(&self.side, &mut reply)? {
            Some(1) if reply[0] == CTL_DONE => Ok(()),
            Some(_) => bail!("unexpected side-channel reply {reply:?}"),
            None => bail!("the child closed the side channel (it failed: see its error above)"),
        }
    }

    /// One request → verified bytes, to be timed.
    fn round_trip(&mut self, transport: Transport, size: usize) -> Result<()> {
        let expected = &self.payload[..size];
        match transport {
            Transport::Shmbridge => {
                let response = self
                    .shmbridge
                    .request(&wire::encode_request(size), ROUND_TRIP_TIMEOUT)
                    .context("shmbridge request")?;
                if response.head.status() != 200 {
                    bail!("shmbridge answered status {}", response.head.status());
                }
                wire::check_body(&response.body, expected)?;
                self.tiers.insert(response.body.tier().as_str());
            }
            Transport::IceoryxSpin => {
                let pending = ice::ask(&self.spin, size)?;
                let deadline = Instant::now() + ROUND_TRIP_TIMEOUT;
                let mut polls = 0u32;
                let response = loop {
                    if let Some(response) = ice(pending.receive(), "receive a response")? {
                        break response;
                    }
                    std::hint::spin_loop();
                    polls = polls.wrapping_add(1);
                    if polls.is_multiple_of(4096) && Instant::now() > deadline {
                        bail!("iceoryx2 spin: no response within {ROUND_TRIP_TIMEOUT:?}");
                    }
                };
                ice::verify(&response, expected)?;
            }
            Transport::IceoryxEvent => {
                let pending = ice::ask(&self.event, size)?;
                ice(self.request_notifier.notify(), "notify the server")?;
                let deadline = Instant::now() + ROUND_TRIP_TIMEOUT;
                let response = loop {
                    if let Some(response) = ice(pending.receive(), "receive a response")? {
                        break response;
                    }
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        bail!("iceoryx2 event: no response within {ROUND_TRIP_TIMEOUT:?}");
                    };
                    ice(
                        self.response_listener.timed_wait(|_| {}, left),
                        "wait for the response event",
                    )?;
                };
                ice::verify(&response, expected)?;
            }
            Transport::Floor => {
                let message = [0xA5u8; FLOOR_LEN];
                wire::send_message(&self.floor, &message)?;
                let mut reply = [0u8; FLOOR_LEN];
                match wire::receive_message(&self.floor, &mut reply)? {
                    Some(FLOOR_LEN) if reply == message => {}
                    Some(len) => bail!("floor: a reply of {len} bytes that is not the message"),
                    None => bail!("floor: the child closed the socket"),
                }
            }
            Transport::Inherent => {
                let copy = &mut self.copy[..size];
                copy.copy_from_slice(std::hint::black_box(expected));
                let produced = crc32fast::hash(copy);
                let consumed = crc32fast::hash(std::hint::black_box(&*copy));
                if produced != consumed {
                    bail!("inherent: the two crc32 passes disagree");
                }
            }
        }
        Ok(())
    }
}
