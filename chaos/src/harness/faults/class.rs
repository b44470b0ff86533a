//! What every fault class provides, and the table that lists them.
//!
//! A class is one file of this folder holding its whole story: the `[fault.NAME]` table of a
//! scenario file (a type implementing [`FaultClass`]), how one fault of it is drawn from the
//! seeded schedule ([`FaultClass::draw`]), and the planned fault itself (a type implementing
//! [`Fault`]): which service it hits, which paths it damages, how it is injected and what it
//! checks. [`fault_classes!`] turns the index's list of classes into the two enums the rest of
//! the harness uses, [`FaultSpec`](super::FaultSpec) and [`FaultAction`](super::FaultAction), so
//! the runner and the schedule never name a class.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::error::{FaultError, InjectError};
use super::spec::DurationRange;
use crate::harness::memory::{MemoryLimit, PressureRound};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::verify::BodyChecker;
use crate::process::role::Role;
use crate::process::supervisor::Supervisor;
use crate::segment::segment_info;

/// How long a third-process injector may take to reach and attach to the segment.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// A fault class as a scenario file names and parameterizes it: its `[fault.NAME]` table.
pub trait FaultClass: Clone + fmt::Debug + Serialize + DeserializeOwned {
    /// The `NAME` of `[fault.NAME]` (the table's kebab-case variant name in
    /// [`FaultSpec`](super::FaultSpec)).
    const NAME: &'static str;
    /// One planned fault of this class.
    type Action: Fault;

    /// How many faults the scenario plans.
    fn count(&self) -> u32;
    fn count_mut(&mut self) -> &mut u32;
    /// Checks the values serde cannot: the field named in the error, and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
    /// Draws one fault and the range of the quiet time before it. The order of the draws from
    /// `rng` is what a printed seed replays: a class must not change it.
    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, Self::Action);
    /// Why this machine cannot inject this class, if it cannot (the scenario is then reported
    /// as skipped, not failed).
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// How long a killed service stays down, when the class says (else the harness's default).
    fn restart_delay(&self) -> Option<Duration> {
        None
    }
    /// Whether users-service must run with a segment file (`--shm-path`) for this class.
    fn needs_segment_file(&self) -> bool {
        false
    }
    /// Flags every start of `role` gets for this class (e.g. the budgets it runs under).
    fn service_args(&self, _role: Role) -> Vec<String> {
        Vec::new()
    }
    /// For a class that runs the services under memory budgets, what each service's resident
    /// memory may reach: the run is then judged by the services' peaks and its refusals
    /// ([`crate::harness::memory`]). Empty for the others.
    fn memory_limits(&self) -> Vec<(Role, MemoryLimit)> {
        Vec::new()
    }
}

/// One planned fault: what it hits and damages, how it is reported, and how it is injected.
/// Called only through [`FaultAction`](super::FaultAction), statically, which is why `inject`
/// may be an `async fn` without naming its future's auto traits.
#[allow(async_fn_in_trait)]
pub trait Fault: Clone + fmt::Debug + PartialEq + Serialize {
    /// The service this fault hits.
    fn role(&self) -> Role;
    /// Whether requests to `endpoint` go through what this fault damages; by default, whether
    /// they pass through the faulted service.
    fn affects(&self, endpoint: Endpoint) -> bool {
        passes_through(self.role(), endpoint)
    }
    /// The row this fault is counted under in the report.
    fn label(&self) -> String;
    /// `FAILPOINTS` for the start of the process this fault hits that precedes it: a fail-point
    /// crash needs the process armed from its start, before the fault's turn.
    fn arming_in_advance(&self) -> Option<(Role, String)> {
        None
    }
    /// Carries the fault out.
    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError>;
}

/// Whether requests to `endpoint` pass through `role`: every route goes through the gateway;
/// the cached route never reaches users-service.
pub fn passes_through(role: Role, endpoint: Endpoint) -> bool {
    match role {
        Role::Gateway => true,
        Role::UsersService => endpoint != Endpoint::Cached,
    }
}

/// What became of one injected fault, for the recovery check and the report.
#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    /// The faulted service is back: restarted and ready, or continued. `None` when the fault
    /// was not carried out (e.g. the load ended first).
    #[serde(skip)]
    pub back: Option<tokio::time::Instant>,
    /// What was done in detail, or why the fault did not happen as planned (e.g. the fail
    /// point was never reached and the harness killed the process with a signal instead).
    pub note: Option<String>,
    /// The fault itself showed a violated invariant (e.g. a resize the kernel allowed, a
    /// slot the reaper never took back from a dead holder).
    pub violation: Option<String>,
    /// What a round of memory pressure measured, for the run's memory checks.
    pub pressure: Option<PressureRound>,
}

impl Injected {
    /// The service is back now, nothing to add.
    pub fn back_now() -> Injected {
        Injected {
            back: Some(Instant::now()),
            note: None,
            violation: None,
            pressure: None,
        }
    }
}

/// What an injector works with.
pub struct FaultContext<'a> {
    pub supervisor: &'a mut Supervisor,
    /// How long a killed service stays down.
    pub restart_delay: Duration,
    /// `FAILPOINTS` for the next start of the faulted service (the next fault's arming).
    pub next_arming: Option<String>,
    /// No fault may still be running at this instant (the fault-free tail of the load).
    pub stop_injecting: Instant,
    /// The quiet time planned after this fault (a degraded phase lasts this long).
    pub hold: Duration,
    /// users-service's `--shm-path`, when the scenario runs it with a segment file.
    pub segment_path: Option<PathBuf>,
    /// The run's body checker (its expected bodies generated once per run), for faults that
    /// send requests of their own.
    pub checker: Arc<BodyChecker>,
}

impl FaultContext<'_> {
    pub fn remaining(&self) -> Duration {
        self.stop_injecting
            .saturating_duration_since(Instant::now())
    }

    /// The abstract socket serving users-service's segment now (it changes at every start).
    pub async fn segment_socket(&self) -> Result<String, InjectError> {
        Ok(segment_info(&self.supervisor.users_url(), ATTACH_TIMEOUT)
            .await?
            .socket)
    }
}

/// Declares the fault classes, one `Variant(spec type)` each (the variant's kebab-case name is
/// the scenario's `[fault.NAME]`), and generates from the list [`FaultSpec`](super::FaultSpec),
/// the class a scenario injects, and [`FaultAction`](super::FaultAction), one planned fault of
/// any class, each dispatching to the class's own code.
macro_rules! fault_classes {
    ($($(#[$doc:meta])* $class:ident($spec:ty),)*) => {
        /// The fault a scenario injects, with its parameters: one table named after the class,
        /// e.g. `[fault.pause]`. (A table rather than a `kind` field: serde buffers an
        /// internally tagged enum, and the TOML parser could then no longer name the field of
        /// an error.)
        #[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum FaultSpec {
            $($(#[$doc])* $class($spec),)*
        }

        impl FaultSpec {
            /// The class name, as in the scenario's `[fault.NAME]`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(FaultSpec::$class(_) => <$spec as $crate::harness::faults::class::FaultClass>::NAME,)*
                }
            }

            pub fn count(&self) -> u32 {
                match self {
                    $(FaultSpec::$class(spec) => spec.count(),)*
                }
            }

            pub fn count_mut(&mut self) -> &mut u32 {
                match self {
                    $(FaultSpec::$class(spec) => spec.count_mut(),)*
                }
            }

            /// See `FaultClass::validate`.
            pub fn validate(&self) -> Result<(), (&'static str, String)> {
                match self {
                    $(FaultSpec::$class(spec) => spec.validate(),)*
                }
            }

            /// One fault and the range of the quiet time before it.
            pub fn draw(
                &self,
                rng: &mut rand_chacha::ChaCha8Rng,
            ) -> ($crate::harness::faults::spec::DurationRange, FaultAction) {
                match self {
                    $(FaultSpec::$class(spec) => {
                        let (interval, action) = spec.draw(rng);
                        (interval, FaultAction::$class(action))
                    })*
                }
            }

            /// See `FaultClass::unavailable`.
            pub fn unavailable(&self) -> Option<String> {
                match self {
                    $(FaultSpec::$class(spec) => spec.unavailable(),)*
                }
            }

            /// See `FaultClass::restart_delay`.
            pub fn restart_delay(&self) -> Option<std::time::Duration> {
                match self {
                    $(FaultSpec::$class(spec) => spec.restart_delay(),)*
                }
            }

            /// See `FaultClass::needs_segment_file`.
            pub fn needs_segment_file(&self) -> bool {
                match self {
                    $(FaultSpec::$class(spec) => spec.needs_segment_file(),)*
                }
            }

            /// See `FaultClass::service_args`.
            pub fn service_args(&self, role: $crate::process::role::Role) -> Vec<String> {
                match self {
                    $(FaultSpec::$class(spec) => spec.service_args(role),)*
                }
            }

            /// See `FaultClass::memory_limits`.
            pub fn memory_limits(
                &self,
            ) -> Vec<($crate::process::role::Role, $crate::harness::memory::MemoryLimit)> {
                match self {
                    $(FaultSpec::$class(spec) => spec.memory_limits(),)*
                }
            }
        }

        /// One planned fault, of any class. It serializes as its class's action does (an
        /// `action` tag and the fault's fields).
        #[derive(Clone, Debug, PartialEq)]
        pub enum FaultAction {
            $($class(<$spec as $crate::harness::faults::class::FaultClass>::Action),)*
        }

        impl serde::Serialize for FaultAction {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(FaultAction::$class(action) => serde::Serialize::serialize(action, serializer),)*
                }
            }
        }

        impl FaultAction {
            /// See `Fault::role`.
            pub fn role(&self) -> $crate::process::role::Role {
                match self {
                    $(FaultAction::$class(action) => action.role(),)*
                }
            }

            /// See `Fault::affects`.
            pub fn affects(&self, endpoint: $crate::loadtest::load::endpoint::Endpoint) -> bool {
                match self {
                    $(FaultAction::$class(action) => action.affects(endpoint),)*
                }
            }

            /// See `Fault::label`.
            pub fn label(&self) -> String {
                match self {
                    $(FaultAction::$class(action) => action.label(),)*
                }
            }

            /// See `Fault::arming_in_advance`.
            pub fn arming_in_advance(&self) -> Option<($crate::process::role::Role, String)> {
                match self {
                    $(FaultAction::$class(action) => action.arming_in_advance(),)*
                }
            }

            /// Carries the fault out.
            pub async fn inject(
                &self,
                context: &mut $crate::harness::faults::class::FaultContext<'_>,
            ) -> Result<
                $crate::harness::faults::class::Injected,
                $crate::harness::faults::error::FaultError,
            > {
                match self {
                    $(FaultAction::$class(action) => action.inject(context).await,)*
                }
            }
        }
    };
}

pub(crate) use fault_classes;
