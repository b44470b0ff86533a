//! Supervision of users-service and the gateway during a chaos scenario: starts each one
//! as a [`ServiceProcess`] from the harness's fail-point build of the services
//! ([`ServicePrograms`]), restarts it on the same address so the gateway's upstream and the load's target stay valid, arms fail points
//! per start through `FAILPOINTS`, and tells the deaths the harness caused (a kill, an armed
//! fail point's self-SIGKILL) from the ones it did not, which are invariant violations.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;
use url::Url;

use crate::harness::failpoint_build::FailpointBinaries;

use super::role::Role;
use super::service::{
    FAILPOINTS_ENV, STOP_GRACE, ServiceError, ServiceProcess, ServiceProgram, Stopped,
};

/// How often running children are checked for an exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A restart on the old address can race the kernel releasing it, or a client connection
/// that took the port as its ephemeral source port; a few tries ride that out.
const BIND_ATTEMPTS: u32 = 5;
const BIND_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Timeout of one check request (`/readyz`, `/healthz`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How the OS error of a failed bind reads in a service's output.
const ADDRESS_IN_USE: &str = "Address already in use";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{role} is not running")]
    NotRunning { role: Role },
    #[error("GET {url} failed: {reason}")]
    Request { url: Url, reason: String },
    #[error("{role} started although it was expected to refuse to")]
    NotRefused { role: Role },
}

/// A child exit the harness did not cause.
#[derive(Clone, Debug, Serialize)]
pub struct UnexpectedDeath {
    pub role: Role,
    pub status: String,
    /// Seconds since the scenario's services started.
    pub at_seconds: f64,
    /// The service's last lines of output.
    pub output: String,
}

struct Managed {
    process: Option<ServiceProcess>,
    /// `127.0.0.1:0` until the first start; the bound address ever after.
    address: SocketAddr,
    /// The `FAILPOINTS` the running process was started with.
    armed: Option<String>,
    /// The armed process died at its fail point; the next `watch` for it reports the crash.
    crashed_at_fail_point: bool,
    /// The process died unexpectedly; `watch` restarts it after the restart delay.
    restart_pending: bool,
    /// Arguments every start of this service gets (e.g. `--shm-path`).
    extra_args: Vec<String>,
}

/// What runs each supervised service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePrograms {
    pub users_service: ServiceProgram,
    pub gateway: ServiceProgram,
}

impl ServicePrograms {
    /// The services of a fail-point build (`harness::failpoint_build`): the only ones
    /// whose `FAILPOINTS` can fire.
    pub fn failpoint_build(binaries: &FailpointBinaries) -> ServicePrograms {
        ServicePrograms {
            users_service: ServiceProgram::Binary(binaries.users_service.clone()),
            gateway: ServiceProgram::Binary(binaries.gateway.clone()),
        }
    }

    fn of(&self, role: Role) -> &ServiceProgram {
        match role {
            Role::UsersService => &self.users_service,
            Role::Gateway => &self.gateway,
        }
    }
}

pub struct Supervisor {
    /// This binary, for helper processes (e.g. `hold-slot`).
    program: PathBuf,
    services: ServicePrograms,
    startup_timeout: Duration,
    /// How long a service that died unexpectedly stays down before its restart.
    restart_delay: Duration,
    users: Managed,
    gateway: Managed,
    started: Instant,
    unexpected: Vec<UnexpectedDeath>,
}

impl Supervisor {
    /// Starts users-service, then the gateway pointed at it, each with the arguments
    /// `service_args` gives it for every start and its `FAILPOINTS` (if any), and waits until
    /// both are ready.
    pub async fn start(
        program: PathBuf,
        services: ServicePrograms,
        startup_timeout: Duration,
        restart_delay: Duration,
        service_args: impl Fn(Role) -> Vec<String>,
        arming: impl Fn(Role) -> Option<String>,
    ) -> Result<Supervisor, SupervisorError> {
        let managed = || Managed {
            process: None,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            armed: None,
            crashed_at_fail_point: false,
            restart_pending: false,
            extra_args: Vec::new(),
        };
        let mut supervisor = Supervisor {
            program,
            services,
            startup_timeout,
            restart_delay,
            users: managed(),
            gateway: managed(),
            started: Instant::now(),
            unexpected: Vec::new(),
        };
        for role in Role::ALL {
            supervisor.managed_mut(role).extra_args = service_args(role);
            supervisor.launch(role, arming(role)).await?;
        }
        Ok(supervisor)
    }

    pub fn gateway_url(&self) -> Url {
        base_url(self.gateway.address)
    }

    /// This binary, which helper processes are started from.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    pub fn users_url(&self) -> Url {
        base_url(self.users.address)
    }

    /// The process id of the running `role`.
    pub fn pid(&self, role: Role) -> Result<nix::unistd::Pid, SupervisorError> {
        self.managed(role)
            .process
            .as_ref()
            .and_then(ServiceProcess::pid)
            .ok_or(SupervisorError::NotRunning { role })
    }

    pub fn is_running(&self, role: Role) -> bool {
        self.managed(role).process.is_some()
    }

    /// Whether the running `role` was started with fail points armed.
    pub fn is_armed(&self, role: Role) -> bool {
        let managed = self.managed(role);
        managed.process.is_some() && managed.armed.is_some()
    }

    /// Starts `role` (on its old address after the first start) with `failpoints` armed and
    /// returns when it is ready. An armed process that crashes at its fail point before it is
    /// ready counts as started; the crash is reported by the next [`Supervisor::watch`].
    pub async fn launch(
        &mut self,
        role: Role,
        failpoints: Option<String>,
    ) -> Result<Instant, SupervisorError> {
        let extra_args = self.managed(role).extra_args.clone();
        let mut process = self.spawn(role, failpoints.as_deref(), &extra_args).await?;
        let startup_timeout = self.startup_timeout;
        let managed = self.managed_mut(role);
        let armed = failpoints.is_some();
        managed.armed = failpoints;
        match process.wait_ready(startup_timeout).await {
            Ok(()) => managed.process = Some(process),
            Err(ServiceError::ExitedEarly { status, .. }) if armed && killed_by_sigkill(status) => {
                managed.armed = None;
                managed.crashed_at_fail_point = true;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(Instant::now())
    }

    /// Starts `role` with `extra_args` on top of its usual ones and waits only until `/healthz`
    /// answers: for a start that is meant to be degraded (its `/readyz` answers 503).
    pub async fn launch_degraded(
        &mut self,
        role: Role,
        extra_args: &[String],
    ) -> Result<(), SupervisorError> {
        let mut args = self.managed(role).extra_args.clone();
        args.extend_from_slice(extra_args);
        let mut process = self.spawn(role, None, &args).await?;
        process.wait_for("/healthz", self.startup_timeout).await?;
        let managed = self.managed_mut(role);
        managed.armed = None;
        managed.process = Some(process);
        Ok(())
    }

    /// Starts `role` with `extra_args` and expects it to refuse to start: `Ok` carries its
    /// exit status and last output, `Err(NotRefused)` means it started (and is now running).
    pub async fn launch_refused(
        &mut self,
        role: Role,
        extra_args: &[String],
    ) -> Result<(ExitStatus, String), SupervisorError> {
        let mut args = self.managed(role).extra_args.clone();
        args.extend_from_slice(extra_args);
        match self.spawn(role, None, &args).await {
            Err(SupervisorError::Service(ServiceError::ExitedEarly { status, output, .. })) => {
                Ok((status, output))
            }
            Err(error) => Err(error),
            Ok(process) => {
                let managed = self.managed_mut(role);
                managed.armed = None;
                managed.process = Some(process);
                Err(SupervisorError::NotRefused { role })
            }
        }
    }

    /// Spawns `role` and waits for its address line, retrying while the old address is not
    /// free again yet.
    async fn spawn(
        &mut self,
        role: Role,
        failpoints: Option<&str>,
        extra_args: &[String],
    ) -> Result<ServiceProcess, SupervisorError> {
        let upstream = base_url(self.users.address).to_string();
        let (service, startup_timeout) = (self.services.of(role).clone(), self.startup_timeout);
        let managed = self.managed_mut(role);
        let mut args: Vec<&str> = extra_args.iter().map(String::as_str).collect();
        if role == Role::Gateway {
            args.extend(["--upstream", &upstream]);
        }
        let mut attempt = 1;
        loop {
            let mut command = service.command(managed.address, &args);
            if let Some(failpoints) = failpoints {
                command.env(FAILPOINTS_ENV, failpoints);
            }
            if std::env::var_os("RUST_LOG").is_none() {
                // Warnings, plus the signal a service received: an unexpected death's kept
                // output then says whether someone sent it SIGTERM.
                command.env("RUST_LOG", "warn,shmbridge_server::serve=info");
            }
            match ServiceProcess::start(role.name(), command, startup_timeout).await {
                Ok(process) => {
                    managed.address = process.address();
                    return Ok(process);
                }
                Err(ServiceError::ExitedEarly { output, .. })
                    if output.contains(ADDRESS_IN_USE) && attempt < BIND_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(BIND_RETRY_DELAY).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// SIGKILL now, as a planned fault.
    pub async fn kill(&mut self, role: Role) -> Result<(), SupervisorError> {
        let process = self.take(role)?;
        process.kill().await?;
        Ok(())
    }

    /// SIGTERM and drain (SIGKILL after the grace period), as a planned restart.
    pub async fn stop(&mut self, role: Role) -> Result<(), SupervisorError> {
        let process = self.take(role)?;
        let name = process.name();
        if let Stopped::Killed = process.stop().await? {
            eprintln!(
                "warning: {name} did not drain within {:?} of SIGTERM and was killed",
                STOP_GRACE
            );
        }
        Ok(())
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to a running service.
    pub fn signal(&self, role: Role, signal: Signal) -> Result<(), SupervisorError> {
        let process = self
            .managed(role)
            .process
            .as_ref()
            .ok_or(SupervisorError::NotRunning { role })?;
        process.send_signal(signal);
        Ok(())
    }

    /// Watches the children for `duration`, or until an armed fail point of `crash_of` fires
    /// (`Ok(true)`). A death the harness did not cause is recorded and the service restarted
    /// after the restart delay, so the scenario goes on and the report shows it.
    pub async fn watch(
        &mut self,
        duration: Duration,
        crash_of: Option<Role>,
    ) -> Result<bool, SupervisorError> {
        let deadline = Instant::now() + duration;
        loop {
            for role in Role::ALL {
                self.reap(role);
                let managed = self.managed_mut(role);
                if crash_of == Some(role) && std::mem::take(&mut managed.crashed_at_fail_point) {
                    return Ok(true);
                }
                if std::mem::take(&mut managed.restart_pending) {
                    tokio::time::sleep(self.restart_delay).await;
                    self.launch(role, None).await?;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// Waits (bounded by the startup timeout each) until both services answer ready,
    /// starting any that is down, unarmed.
    pub async fn wait_healthy(&mut self) -> Result<(), SupervisorError> {
        self.watch(Duration::ZERO, None).await?;
        for role in Role::ALL {
            let timeout = self.startup_timeout;
            match self.managed_mut(role).process.as_mut() {
                Some(process) => process.wait_ready(timeout).await?,
                None => {
                    self.launch(role, None).await?;
                }
            }
        }
        Ok(())
    }

    /// `GET path` of `role`: its status code and body.
    pub async fn get(&self, role: Role, path: &str) -> Result<(u16, String), SupervisorError> {
        let url = base_url(self.managed(role).address)
            .join(path)
            .expect("an absolute path joins");
        let failed = |error: reqwest::Error| SupervisorError::Request {
            url: url.clone(),
            reason: error.to_string(),
        };
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(failed)?
            .get(url.clone())
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(failed)?))
    }

    /// Stops the gateway, then users-service, and returns the deaths it did not cause.
    pub async fn shutdown(mut self) -> Result<Vec<UnexpectedDeath>, SupervisorError> {
        self.watch(Duration::ZERO, None).await?;
        for role in [Role::Gateway, Role::UsersService] {
            if self.is_running(role) {
                self.stop(role).await?;
            }
        }
        Ok(std::mem::take(&mut self.unexpected))
    }

    /// Reaps `role` if it exited: an armed fail point's SIGKILL is a planned fault, any
    /// other exit is recorded as unexpected and scheduled for a restart.
    fn reap(&mut self, role: Role) {
        let started = self.started;
        let managed = self.managed_mut(role);
        let Some(process) = managed.process.as_mut() else {
            return;
        };
        let status = match process.exit_status() {
            Ok(None) => return,
            Ok(Some(status)) => Ok(status),
            Err(error) => Err(error),
        };
        let process = managed.process.take().expect("checked above");
        let armed = managed.armed.take().is_some();
        match status {
            Ok(status) if armed && killed_by_sigkill(status) => {
                managed.crashed_at_fail_point = true;
            }
            status => {
                managed.restart_pending = true;
                self.unexpected.push(UnexpectedDeath {
                    role,
                    status: match status {
                        Ok(status) => status.to_string(),
                        Err(error) => format!("unknown ({error})"),
                    },
                    at_seconds: started.elapsed().as_secs_f64(),
                    output: process.recent_output(),
                });
            }
        }
    }

    fn take(&mut self, role: Role) -> Result<ServiceProcess, SupervisorError> {
        let managed = self.managed_mut(role);
        managed.armed = None;
        managed
            .process
            .take()
            .ok_or(SupervisorError::NotRunning { role })
    }

    fn managed(&self, role: Role) -> &Managed {
        match role {
            Role::UsersService => &self.users,
            Role::Gateway => &self.gateway,
        }
    }

    fn managed_mut(&mut self, role: Role) -> &mut Managed {
        match role {
            Role::UsersService => &mut self.users,
            Role::Gateway => &mut self.gateway,
        }
    }
}

fn killed_by_sigkill(status: ExitStatus) -> bool {
    status.signal() == Some(Signal::SIGKILL as i32)
}

fn base_url(address: SocketAddr) -> Url {
    format!("http://{address}")
        .parse()
        .expect("a socket address forms a valid URL")
}
