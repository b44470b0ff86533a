//! The child process (the hidden `serve` subcommand): pinned to its own CPU, it serves every
//! transport the parent measures, each from threads that sleep while the others are measured:
//!
//! - shmbridge: a [`ControlServer`] channel whose handler writes the payload's first `size`
//!   bytes through [`ResponseWriter::expect_len`] and `write_all` (the channel's own threads);
//! - iceoryx2, event-woken: a thread that sleeps on an event listener and answers every waiting
//!   request, then notifies;
//! - iceoryx2, busy-polling: a thread that polls its server only between the side channel's
//!   [`CTL_SPIN`] and [`CTL_IDLE`] (it would otherwise burn this CPU while the others run);
//! - the kernel floor: a thread echoing each [`FLOOR_LEN`]-byte message on the second side
//!   connection.
//!
//! The main thread reads the side channel's commands; the parent closing it ends the process.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use shmbridge::control::{ChannelOptions, ControlServer, HandlerError, ResponseWriter};
use shmbridge::{Producer, ProducerOptions, Segment, SegmentConfig};

use crate::ice::{self, ice};
use crate::wire::{self, CTL_DONE, CTL_IDLE, CTL_SPIN, FLOOR_LEN, Names, READY_LINE};

/// How long the event-woken server sleeps at most before looking whether it should stop.
const EVENT_POLL: Duration = Duration::from_millis(100);

/// The busy-polling server's state, set by the main thread.
const IDLE: u8 = 0;
const SPIN: u8 = 1;
const QUIT: u8 = 2;

/// Serves until the parent closes the side channel.
pub fn serve(names: &Names, max_size: usize, cpu: usize) -> Result<()> {
    wire::pin_to_cpu(cpu)?;
    let payload: Arc<[u8]> = wire::payload(max_size).into();
    let _shmbridge = start_shmbridge(names, Arc::clone(&payload))?;
    let side_listener = wire::listen_seqpacket(&names.side_socket())?;

    let quit = Arc::new(AtomicBool::new(false));
    let spin_state = Arc::new(AtomicU8::new(IDLE));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let (spin_ack_tx, spin_ack_rx) = mpsc::channel::<Result<()>>();
    let event_thread = {
        let (names, payload, quit, ready) = (
            names.clone(),
            Arc::clone(&payload),
            Arc::clone(&quit),
            ready_tx.clone(),
        );
        spawn("iceoryx2-event", move || {
            event_server(&names, &payload, &quit, &ready)
        })?
    };
    let spin_thread = {
        let (names, payload, state) =
            (names.clone(), Arc::clone(&payload), Arc::clone(&spin_state));
        spawn("iceoryx2-spin", move || {
            spin_server(&names, &payload, &state, &ready_tx, &spin_ack_tx)
        })?
    };
    for _ in 0..2 {
        ready_rx
            .recv()
            .map_err(|_| anyhow!("an iceoryx2 server thread ended before it was ready"))??;
    }

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY_LINE}")
        .and_then(|()| stdout.flush())
        .context("tell the parent this child is ready")?;
    drop(stdout);

    let side = wire::accept_seqpacket(&side_listener)?;
    let floor = wire::accept_seqpacket(&side_listener)?;
    let floor_thread = spawn("floor-echo", move || echo(&floor))?;

    let commands = read_commands(&side, &spin_state, spin_thread.thread(), &spin_ack_rx);
    spin_state.store(QUIT, Ordering::Release);
    spin_thread.thread().unpark();
    quit.store(true, Ordering::Release);
    drop(side);
    let spin = join(spin_thread);
    let event = join(event_thread);
    let floor = join(floor_thread);
    commands.and(spin).and(event).and(floor)
}

/// The segment (default geometry: 64 slots of 512 KiB), the producer and the channel.
fn start_shmbridge(names: &Names, payload: Arc<[u8]>) -> Result<ControlServer> {
    let segment =
        Arc::new(Segment::create(&SegmentConfig::default()).context("create the segment")?);
    let producer = Arc::new(
        Producer::new(segment, ProducerOptions::default()).context("create the producer")?,
    );
    let handler = move |request: &[u8], out: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
        let size = wire::decode_request(request, payload.len())?;
        out.set_content_type("application/octet-stream")?;
        out.expect_len(size as u64)?;
        out.write_all(&payload[..size])?;
        Ok(())
    };
    let options = ChannelOptions::for_segment(producer.segment());
    ControlServer::spawn_channel(
        producer,
        Arc::new(handler),
        options,
        &names.shmbridge_socket(),
    )
    .context("start the shmbridge channel")
}

/// Sleeps on the request event; on each wake answers every waiting request, then notifies.
fn event_server(
    names: &Names,
    payload: &[u8],
    quit: &AtomicBool,
    ready: &mpsc::Sender<Result<()>>,
) -> Result<()> {
    let setup = || -> Result<_> {
        let node = ice::node()?;
        let service = ice::create_rr(&node, &names.iceoryx_event())?;
        let server = ice::server(&service, payload.len())?;
        let requests = ice::create_event(&node, &names.iceoryx_request_event())?;
        let responses = ice::create_event(&node, &names.iceoryx_response_event())?;
        let listener = ice(requests.listener_builder().create(), "create a listener")?;
        let notifier = ice(responses.notifier_builder().create(), "create a notifier")?;
        Ok((
            node, service, server, requests, responses, listener, notifier,
        ))
    };
    let (_node, _service, server, _requests, _responses, listener, notifier) =
        report_ready(setup(), ready)?;
    while !quit.load(Ordering::Acquire) {
        ice(
            listener.timed_wait(|_| {}, EVENT_POLL),
            "wait for a request",
        )?;
        while ice::answer_one(&server, payload)? {
            ice(notifier.notify(), "notify the client")?;
        }
    }
    Ok(())
}

/// Polls its server while the state is [`SPIN`], parks while [`IDLE`]; acknowledges each
/// change on `ack`.
fn spin_server(
    names: &Names,
    payload: &[u8],
    state: &AtomicU8,
    ready: &mpsc::Sender<Result<()>>,
    ack: &mpsc::Sender<Result<()>>,
) -> Result<()> {
    let setup = || -> Result<_> {
        let node = ice::node()?;
        let service = ice::create_rr(&node, &names.iceoryx_spin())?;
        let server = ice::server(&service, payload.len())?;
        Ok((node, service, server))
    };
    let (_node, _service, server) = report_ready(setup(), ready)?;
    loop {
        match state.load(Ordering::Acquire) {
            QUIT => return Ok(()),
            IDLE => thread::park(),
            _ => {
                let _ = ack.send(Ok(()));
                let mut polled = Ok(());
                while state.load(Ordering::Relaxed) == SPIN {
                    match ice::answer_one(&server, payload) {
                        Ok(true) => {}
                        Ok(false) => std::hint::spin_loop(),
                        Err(error) => {
                            polled = Err(error);
                            break;
                        }
                    }
                }
                let failed = polled.is_err();
                let _ = ack.send(polled);
                if failed {
                    return Ok(());
                }
            }
        }
    }
}

/// Sends `Ok` or the setup's error on `ready`, and hands the setup on.
fn report_ready<T>(setup: Result<T>, ready: &mpsc::Sender<Result<()>>) -> Result<T> {
    match setup {
        Ok(value) => {
            let _ = ready.send(Ok(()));
            Ok(value)
        }
        Err(error) => {
            let _ = ready.send(Err(anyhow!("{error:#}")));
            Err(error)
        }
    }
}

/// Runs the side channel's commands until the parent closes it.
fn read_commands(
    side: &impl std::os::fd::AsFd,
    spin_state: &AtomicU8,
    spin_thread: &thread::Thread,
    spin_ack: &mpsc::Receiver<Result<()>>,
) -> Result<()> {
    let mut command = [0u8; 1];
    while let Some(len) = wire::receive_message(side, &mut command)? {
        let next = match (len, command[0]) {
            (1, CTL_SPIN) => SPIN,
            (1, CTL_IDLE) => IDLE,
            _ => bail!("unknown side-channel command {command:?} ({len} bytes)"),
        };
        spin_state.store(next, Ordering::Release);
        spin_thread.unpark();
        spin_ack
            .recv_timeout(Duration::from_secs(5))
            .map_err(|error| anyhow!("the busy-polling server did not acknowledge: {error}"))?
            .context("the busy-polling server failed")?;
        wire::send_message(side, &[CTL_DONE])?;
    }
    Ok(())
}

/// The kernel floor's far end: sends every message back as it came.
fn echo(socket: &impl std::os::fd::AsFd) -> Result<()> {
    let mut message = [0u8; FLOOR_LEN];
    while let Some(len) = wire::receive_message(socket, &mut message)? {
        wire::send_message(socket, &message[..len])?;
    }
    Ok(())
}

fn spawn(
    name: &str,
    work: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<JoinHandle<Result<()>>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .with_context(|| format!("start thread {name}"))
}

fn join(thread: JoinHandle<Result<()>>) -> Result<()> {
    let name = thread.thread().name().unwrap_or("?").to_owned();
    thread
        .join()
        .map_err(|_| anyhow!("thread {name} panicked"))?
        .with_context(|| format!("thread {name}"))
}
