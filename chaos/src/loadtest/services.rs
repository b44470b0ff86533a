//! The two services that `compare` and `sweep` measure: users-service and the gateway in front
//! of it, started as children of this binary (or, for users-service, the seed's Python one) on
//! loopback ports, and stopped when the measurements are taken.

use std::net::SocketAddr;
use std::time::Duration;

use crate::loadtest::capacity::cpu::Processes;
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::go::{self, GatewayKind, GoError};
use crate::process::python::{self, PythonError, UsersServiceKind};
use crate::process::service::{STOP_GRACE, ServiceError, ServiceProcess, ServiceProgram, Stopped};

/// The hidden subcommands that turn this binary into each service.
pub const SERVE_USERS_SERVICE: &str = "serve-users-service";
pub const SERVE_GATEWAY: &str = "serve-gateway";

/// How `compare` (and `sweep`) start the services they measure.
#[derive(clap::Args, Clone, Debug)]
pub struct ServiceArgs {
    /// How long each service may take to announce its address and report ready.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// Start users-service with `--cache`: both paths serve bytes serialized once instead of per
    /// request (the seed serialized per request), so the run compares the transports alone.
    #[arg(long)]
    pub cache: bool,
    /// Which users-service to measure behind our gateway: this program's Rust one, or the
    /// seed's kind, a Python service (`server/python/users_service.py`, its package built into
    /// `target/python-venv` first: needs python3 with venv and pip).
    #[arg(long, value_enum, default_value_t = UsersServiceKind::Rust)]
    pub users_service: UsersServiceKind,
    /// Which gateway to measure: this program's Rust one, or the seed's kind, a Go gateway
    /// (`transport/go/cmd/gateway` over the Go package, built into `target/go-gateway` first:
    /// needs Go ≥ 1.19, installed from Debian's golang-go when missing). It serves the `api` and
    /// `shm` endpoints only.
    #[arg(long, value_enum, default_value_t = GatewayKind::Rust)]
    pub gateway: GatewayKind,
}

impl ServiceArgs {
    /// Refuses, before anything starts, endpoints the chosen gateway does not serve.
    pub fn check_endpoints(&self, endpoints: &[Endpoint]) -> Result<(), ServicesError> {
        check_gateway_serves(self.gateway, endpoints)
    }
}

/// Refuses endpoints `gateway` does not serve: the Go gateway has the `api` and `shm` routes only.
pub fn check_gateway_serves(
    gateway: GatewayKind,
    endpoints: &[Endpoint],
) -> Result<(), ServicesError> {
    match endpoints.iter().find(|endpoint| {
        gateway == GatewayKind::Go && !matches!(endpoint, Endpoint::Api | Endpoint::Shm)
    }) {
        Some(&endpoint) => Err(ServicesError::NotServed(endpoint)),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("cannot find this program's own executable to start the services: {0}")]
    OwnExecutable(std::io::Error),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    Go(#[from] GoError),
    #[error("the Go gateway serves the api and shm endpoints only, not {0}")]
    NotServed(Endpoint),
}

/// users-service and the gateway in front of it, children of this process on loopback ports.
pub(crate) struct Services {
    pub(crate) users_service: ServiceProcess,
    pub(crate) gateway: ServiceProcess,
    kind: UsersServiceKind,
    gateway_kind: GatewayKind,
    /// The subcommand that started them (`compare`, `sweep`), for the report.
    started_by: &'static str,
}

impl Services {
    /// Starts both for the subcommand `started_by`; `http_signal` also turns on the
    /// HTTP-signalled shared-memory path on both. `request_timeout` is the run's own bound on a
    /// request, given to the gateway as its `--deadline`, so that a slow answer is the run's
    /// timeout and not, earlier, the gateway's default 2 s deadline as a 503.
    pub(crate) async fn start(
        args: &ServiceArgs,
        http_signal: bool,
        request_timeout: Duration,
        started_by: &'static str,
    ) -> Result<Services, ServicesError> {
        let program = std::env::current_exe().map_err(ServicesError::OwnExecutable)?;
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let service = |subcommand: &'static str, extra: &[&str]| {
            ServiceProgram::Subcommand {
                program: program.clone(),
                subcommand,
            }
            .command(listen, extra)
        };

        let mut users_flags = Vec::new();
        if args.cache {
            users_flags.push("--cache");
        }
        if http_signal {
            users_flags.push("--http-signal");
        }
        let users_command = match args.users_service {
            UsersServiceKind::Rust => service(SERVE_USERS_SERVICE, &users_flags),
            UsersServiceKind::Python => {
                python::users_service().await?.command(listen, &users_flags)
            }
        };
        let mut users_service =
            ServiceProcess::start("users-service", users_command, args.startup_timeout).await?;
        users_service.wait_ready(args.startup_timeout).await?;
        let upstream = users_service.base_url().to_string();
        let deadline = humantime::format_duration(request_timeout).to_string();
        let mut gateway_flags = vec!["--upstream", upstream.as_str(), "--deadline", &deadline];
        if http_signal {
            gateway_flags.push("--http-signal");
        }
        let gateway_command = match args.gateway {
            GatewayKind::Rust => service(SERVE_GATEWAY, &gateway_flags),
            GatewayKind::Go => go::gateway().await?.command(listen, &gateway_flags),
        };
        let mut gateway =
            ServiceProcess::start("gateway", gateway_command, args.startup_timeout).await?;
        gateway.wait_ready(args.startup_timeout).await?;
        eprintln!(
            "users-service on {}, gateway on {}",
            users_service.address(),
            gateway.address()
        );
        Ok(Services {
            users_service,
            gateway,
            kind: args.users_service,
            gateway_kind: args.gateway,
            started_by,
        })
    }

    /// Both process ids, while both children run.
    pub(crate) fn processes(&self) -> Option<Processes> {
        self.gateway
            .pid()
            .zip(self.users_service.pid())
            .map(|(gateway, users_service)| Processes {
                gateway,
                users_service,
            })
    }

    /// Where the services ran, for the report.
    pub(crate) fn describe(&self) -> String {
        format!(
            "users-service{} ({}) and gateway{} ({}) started by `{}` as child processes on loopback, load generated from the same machine",
            match self.kind {
                UsersServiceKind::Rust => "",
                UsersServiceKind::Python => {
                    " in Python (server/python/users_service.py)"
                }
            },
            self.users_service.address(),
            match self.gateway_kind {
                GatewayKind::Rust => "",
                GatewayKind::Go => " in Go (transport/go/cmd/gateway)",
            },
            self.gateway.address(),
            self.started_by,
        )
    }

    /// SIGTERM to each, gateway first; a service that exits badly or must be killed is a
    /// warning, not an error: the measurements are already taken.
    pub(crate) async fn stop(self) -> Result<(), ServicesError> {
        for service in [self.gateway, self.users_service] {
            let name = service.name();
            match service.stop().await? {
                Stopped::Drained(status) if status.success() => {}
                Stopped::Drained(status) => {
                    eprintln!("warning: {name} exited with {status} after SIGTERM")
                }
                Stopped::Killed => eprintln!(
                    "warning: {name} did not exit within {:?} of SIGTERM and was killed",
                    STOP_GRACE
                ),
            }
        }
        Ok(())
    }
}
