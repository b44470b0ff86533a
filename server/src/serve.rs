//! Running a router the way both services do: bind (port 0 allowed), print the one
//! machine-readable `listening on ADDR` line on stdout, serve until SIGTERM or Ctrl-C, then drain
//! in-flight requests for at most the shutdown deadline. Every accepted connection has a write
//! timeout: a client that stops reading has its connection closed, and the response it pinned
//! (its bytes, a sealed mapping, the gateway's memory reservation) is dropped.

use std::io::Write;
use std::net::{AddrParseError, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_io_timeout::TimeoutStream;

/// Options every service shares, flattened into each service's `Args`.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Log format on stderr; the filter comes from RUST_LOG (default "info").
    #[arg(long, env = "SHMBRIDGE_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: crate::telemetry::LogFormat,
    /// How long in-flight requests may run after SIGTERM/Ctrl-C before the process exits anyway.
    #[arg(long, env = "SHMBRIDGE_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// How long a write to a client may make no progress before the connection is closed (a
    /// client that stopped reading cannot keep a response's bytes in memory).
    #[arg(long, env = "SHMBRIDGE_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
}

/// Binds `listen`, returning the listener and the address actually bound.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener
        .local_addr()
        .context("bound socket has no address")?;
    Ok((listener, bound))
}

/// The listeners a service announces on stdout once it accepts connections, each as one line
/// `PREFIX ADDR` ([`announce`]); the one definition of that line, which the tests and the load
/// harness read back with [`announced`] (the Go and Python peers print the same line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupLine {
    /// `listening on ADDR`: the service's own address, always announced first.
    Public,
    /// `admin listening on ADDR`: the operators' listener, announced next where there is one.
    Admin,
}

impl StartupLine {
    fn prefix(self) -> &'static str {
        match self {
            StartupLine::Public => "listening on ",
            StartupLine::Admin => "admin listening on ",
        }
    }
}

impl StartupLine {
    /// The line announcing `bound`.
    fn text(self, bound: SocketAddr) -> String {
        format!("{}{bound}", self.prefix())
    }
}

/// Prints the start-up line `line` for `bound`, as one flushed line.
pub fn announce(line: StartupLine, bound: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", line.text(bound)).context("cannot write to stdout")?;
    stdout.flush().context("cannot flush stdout")
}

/// What `line` says as a start-up line of kind `kind`: `None` for any other line, else the
/// address, or why what follows the prefix is not one.
pub fn announced(line: &str, kind: StartupLine) -> Option<Result<SocketAddr, AddrParseError>> {
    line.strip_prefix(kind.prefix())
        .map(|address| address.trim().parse())
}

/// SIGTERM and SIGINT (Ctrl-C) handlers, installed before the service announces itself so a
/// signal sent right after the `listening on` line is never the default (fatal) action.
pub struct ShutdownSignal {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignal {
    pub fn install() -> anyhow::Result<ShutdownSignal> {
        Ok(ShutdownSignal {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn received(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Accepts as a `TcpListener` does, each connection with a write timeout and with Nagle's
/// algorithm off: a body streamed in several writes (users-service's `/blobs`, a large
/// `/users`) otherwise waits for the peer's delayed ACK between them, which measured as a p99 of
/// 43 ms on REST for 1 to 16 KiB blobs in the sweep.
struct WriteTimeoutListener {
    inner: TcpListener,
    write_timeout: Duration,
}

impl Listener for WriteTimeoutListener {
    // Pinned in a box: `TimeoutStream` holds its timers in place, and the server wants `Unpin`.
    type Io = Pin<Box<TimeoutStream<TcpStream>>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = Listener::accept(&mut self.inner).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot turn Nagle's algorithm off on a connection");
        }
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.write_timeout));
        (Box::pin(stream), address)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets in-flight requests finish
/// for at most `common.shutdown_timeout`; every connection has `common.write_timeout`. Returns
/// once the server has stopped.
pub async fn serve_until_signal(
    listener: TcpListener,
    router: Router,
    shutdown: ShutdownSignal,
    common: &CommonArgs,
) -> anyhow::Result<()> {
    let drain_timeout = common.shutdown_timeout;
    let listener = WriteTimeoutListener {
        inner: listener,
        write_timeout: common.write_timeout,
    };
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.received().await;
            tracing::info!("draining in-flight requests");
            // The receiver lives until this function returns, so the send cannot fail.
            let _ = signalled_tx.send(());
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("server failed"),
        _ = signalled_rx => {}
    }
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(result) => {
            tracing::info!("drained; exiting");
            result.context("server failed while draining")
        }
        Err(_) => {
            tracing::warn!(
                timeout = %humantime::format_duration(drain_timeout),
                "in-flight requests did not finish within the shutdown timeout; exiting anyway"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_up_line_reads_back_as_the_address_it_announced() {
        for bound in ["127.0.0.1:8081", "[::1]:9"] {
            let bound: SocketAddr = bound.parse().unwrap();
            for kind in [StartupLine::Public, StartupLine::Admin] {
                assert_eq!(announced(&kind.text(bound), kind), Some(Ok(bound)));
            }
        }
        let admin = StartupLine::Admin.text("127.0.0.1:1".parse().unwrap());
        assert_eq!(announced(&admin, StartupLine::Public), None);
        assert_eq!(announced("starting", StartupLine::Public), None);
        assert!(matches!(
            announced("listening on nowhere", StartupLine::Public),
            Some(Err(_))
        ));
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off_and_a_write_timeout() {
        let (inner, bound) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut listener = WriteTimeoutListener {
            inner,
            write_timeout: Duration::from_secs(7),
        };
        let _client = TcpStream::connect(bound).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.get_ref().nodelay().unwrap());
        assert_eq!(accepted.write_timeout(), Some(Duration::from_secs(7)));
    }
}
