//! The signal's round trip, request → handle, for the default query: over the control channel
//! (the default shared-memory path) beside the seed's `POST /shm/users` (`--http-signal`), each
//! back to back and with the producer left idle between requests.
//!
//! `cargo bench -p shmbridge-server --bench signal_round_trip` prints criterion's statistics,
//! then, per regime, the median round trip of each path and their ratios, from requests
//! alternating between the paths in the same run (so a noisy neighbour slows both alike).

// Design notes.
//
// users-service runs as a child process (this package's `users-service` binary with `--cache
// --http-signal`, logging at `warn`), not in this process: in production it is another process
// with its own tokio runtime, allocator and threads, and a child keeps the bench's client
// threads from competing with it inside one runtime or sharing its allocator arenas. Wake-ups
// cost the same between processes as between threads, so nothing is lost by this. `--cache`
// serializes the body once, so what is timed is the signal plus the copy into the slot.
//
// Both paths are asked through the gateway's own client code (`Attachment::request`, sending
// the HTTP request `GET /users` in the channel's encoding, and `Upstream::publish_users`, a
// keep-alive reqwest client), from a task spawned on a multi-threaded runtime as a gateway
// request handler would be, so each pays the wake-ups the gateway pays and no more. The clock
// runs inside that task from just before the request to the handle in hand (over the channel,
// the publication that carries it); the body is then redeemed (acquire, copy out, crc check)
// after the clock stops, so the segment never fills. The bytes are compared with the dataset once per path at
// start-up, so the bench measures publications that are real.
//
// "Idle" sleeps `IDLE_GAP` before each request, long enough for users-service's threads and the
// client's runtime workers to park, as at the seed profile's light load; only the round trip
// itself is counted (criterion's `iter_custom`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use shmbridge::control::Publication;
use shmbridge::http::HttpRequest;
use shmbridge::{ConsumerOptions, Handle};
use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED, users_json};
use shmbridge_server::gateway::shm_consumer::{Attachment, ShmClient};
use shmbridge_server::gateway::upstream::Upstream;
use shmbridge_server::memory_budget::{BudgetKind, MemoryBudget};
use shmbridge_server::query::UsersQuery;
use shmbridge_system_tests::process::{ServiceProcess, start};
use tokio::runtime::Runtime;

/// The pause before each request of the idle regime.
const IDLE_GAP: Duration = Duration::from_millis(3);
/// Every request's deadline, on both paths: far above a round trip, so only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(2);
/// How long a redeeming read may hold its slot (the gateway's `--lease` default).
const LEASE: Duration = Duration::from_secs(1);
/// Requests per path in the interleaved summary, and per batch before switching paths.
const BACK_TO_BACK: (usize, usize) = (2000, 25);
const IDLE: (usize, usize) = (800, 10);

#[derive(Clone, Copy, Debug)]
enum Signal {
    /// A publish frame on the control connection; the answer frame carries the handle.
    Channel,
    /// `POST /shm/users`; the response body carries the handle.
    Http,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Channel => "channel",
            Signal::Http => "http",
        }
    }
}

#[derive(Clone, Copy)]
enum Regime {
    BackToBack,
    Idle,
}

impl Regime {
    fn name(self) -> &'static str {
        match self {
            Regime::BackToBack => "back_to_back",
            Regime::Idle => "idle",
        }
    }

    /// What happens before each timed request.
    fn pause(self) {
        if let Regime::Idle = self {
            std::thread::sleep(IDLE_GAP);
        }
    }
}

/// The gateway's two ways to users-service: the control channel and HTTP.
struct Clients {
    shm: ShmClient,
    attachment: Arc<Attachment>,
    upstream: Upstream,
}

/// What a signal's round trip hands back: the handle, and over the channel the publication
/// that carries it (redeemed through it).
enum Signalled {
    Channel(Publication),
    Http(Handle),
}

impl Clients {
    async fn handle(&self, signal: Signal) -> Signalled {
        let query = UsersQuery::default();
        let signalled = match signal {
            Signal::Channel => {
                let target = format!("/users?{}", query.to_query_string());
                let request = HttpRequest::get(&target).encode().expect("a valid request");
                let deadline = tokio::time::Instant::now() + DEADLINE;
                let permit = self.shm.in_flight_permit(deadline).await;
                match permit {
                    Ok(permit) => self.attachment.request(&request, deadline, permit).await,
                    Err(error) => Err(error),
                }
                .map(|(publication, _permit)| Signalled::Channel(publication))
            }
            Signal::Http => self
                .upstream
                .publish_users(query)
                .await
                .map(Signalled::Http),
        };
        signalled.unwrap_or_else(|error| panic!("{} round trip failed: {error}", signal.name()))
    }

    /// The verified body and the crc32 it was verified against.
    async fn redeem(&self, signalled: Signalled) -> (Vec<u8>, u32) {
        let redeemed = match signalled {
            Signalled::Channel(publication) => self
                .attachment
                .redeem(publication)
                .await
                .map(|redeemed| (redeemed.response.body.to_vec(), redeemed.crc32)),
            Signalled::Http(handle) => self
                .attachment
                .redeem_handle(&handle)
                .map(|bytes| (bytes, handle.crc)),
        };
        redeemed.unwrap_or_else(|error| panic!("redeeming failed: {error}"))
    }
}

struct Bench {
    clients: Arc<Clients>,
    runtime: Runtime,
    /// Declared last so it outlives the control connection: the producer sees the gateway
    /// leave, not its own death.
    _service: ServiceProcess,
}

impl Bench {
    fn start() -> Bench {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the client runtime starts");
        let service = runtime.block_on(start(
            "users-service",
            env!("CARGO_BIN_EXE_users-service"),
            &["--listen", "127.0.0.1:0", "--cache", "--http-signal"],
            &[],
        ));
        let base = service.url().parse().expect("the service's URL parses");
        // The bench holds one body at a time: any budget above the largest will do.
        let budget = MemoryBudget::new(BudgetKind::GatewayMemory, 1 << 30);
        let upstream = Upstream::new(base, DEADLINE, 4, budget).expect("the HTTP client builds");
        let shm = ShmClient::new(
            None,
            Vec::new(),
            ConsumerOptions {
                lease: LEASE,
                ..ConsumerOptions::default()
            },
            32,
            DEADLINE,
        );
        let attachment = runtime
            .block_on(shm.attachment(&upstream, None, "bench"))
            .unwrap_or_else(|error| panic!("cannot attach to users-service: {error}"));
        let bench = Bench {
            clients: Arc::new(Clients {
                shm,
                attachment,
                upstream,
            }),
            runtime,
            _service: service,
        };
        bench.verify_payloads();
        bench
    }

    /// Both paths' handles redeem to the dataset's default body, with its crc32.
    fn verify_payloads(&self) {
        let expected = users_json(DEFAULT_COUNT, DEFAULT_SEED);
        for signal in [Signal::Channel, Signal::Http] {
            let clients = &self.clients;
            let (bytes, crc) = self.runtime.block_on(async {
                let signalled = clients.handle(signal).await;
                clients.redeem(signalled).await
            });
            assert_eq!(crc, crc32fast::hash(&expected), "{}", signal.name());
            assert!(
                bytes == expected,
                "{}: not the dataset's bytes",
                signal.name()
            );
        }
    }

    /// One round trip, timed from the request to the handle in a task on the client runtime;
    /// the handle is redeemed after the clock stops.
    fn round_trip(&self, signal: Signal) -> Duration {
        let clients = Arc::clone(&self.clients);
        let task = self.runtime.spawn(async move {
            let start = Instant::now();
            let signalled = clients.handle(signal).await;
            let elapsed = start.elapsed();
            clients.redeem(signalled).await;
            elapsed
        });
        self.runtime
            .block_on(task)
            .expect("the round-trip task completes")
    }
}

fn criterion_groups(c: &mut Criterion, bench: &Bench) {
    let mut group = c.benchmark_group("signal_round_trip");
    // Criterion plans iterations by wall time, idle gaps included, so these bound the run.
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for regime in [Regime::BackToBack, Regime::Idle] {
        for signal in [Signal::Channel, Signal::Http] {
            group.bench_function(BenchmarkId::new(signal.name(), regime.name()), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            regime.pause();
                            bench.round_trip(signal)
                        })
                        .sum()
                })
            });
        }
    }
    group.finish();
}

/// Median round trips (channel, HTTP) over `requests` each, in batches of `batch` that
/// alternate between the paths, each round starting with the path the last one ended with.
fn interleaved_medians(
    bench: &Bench,
    regime: Regime,
    (requests, batch): (usize, usize),
) -> (Duration, Duration) {
    let (mut channel, mut http) = (Vec::new(), Vec::new());
    for round in 0..requests / batch {
        let order = if round % 2 == 0 {
            [Signal::Channel, Signal::Http]
        } else {
            [Signal::Http, Signal::Channel]
        };
        for signal in order {
            let samples = match signal {
                Signal::Channel => &mut channel,
                Signal::Http => &mut http,
            };
            for _ in 0..batch {
                regime.pause();
                samples.push(bench.round_trip(signal));
            }
        }
    }
    (median(&mut channel), median(&mut http))
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let bench = Bench::start();
    let mut criterion = Criterion::default().configure_from_args();
    criterion_groups(&mut criterion, &bench);
    criterion.final_summary();

    println!(
        "\nrequest → handle for the default query ({DEFAULT_COUNT} users, --cache), medians of \
         requests alternating between the paths in batches:"
    );
    println!(
        "{:<22} {:>9} {:>12} {:>10} {:>13} {:>13}",
        "regime", "per path", "channel µs", "http µs", "http/channel", "channel/http"
    );
    let idle = format!("idle ({IDLE_GAP:?} gaps)");
    for (regime, label, plan) in [
        (Regime::BackToBack, "back to back", BACK_TO_BACK),
        (Regime::Idle, idle.as_str(), IDLE),
    ] {
        let (channel, http) = interleaved_medians(&bench, regime, plan);
        let (channel, http) = (channel.as_secs_f64() * 1e6, http.as_secs_f64() * 1e6);
        println!(
            "{label:<22} {:>9} {channel:>12.1} {http:>10.1} {:>13.3} {:>13.3}",
            plan.0 / plan.1 * plan.1,
            http / channel,
            channel / http
        );
    }
}
