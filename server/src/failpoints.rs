//! Named fault points inside the shared-memory write and read paths, for the chaos harness.
//!
//! Built on the `fail` crate and compiled in only with the `failpoints` feature, which no
//! workspace member turns on through a dependency (Cargo would unify it into every build): the
//! chaos harness builds its own fail-point services in a separate cargo invocation. Without the
//! feature [`hit`] is empty, the `fail` crate is not linked, and a non-empty `FAILPOINTS` stops
//! the service at start-up, so a binary from `cargo build` can never be crashed or stalled
//! through the environment.
//!
//! The points are armed at start-up from the `FAILPOINTS` environment variable in the fail
//! crate's format, `name=actions;name=actions`, e.g.
//! `FAILPOINTS="users-service::mid-copy=37*off->1*return"` (crash at the 38th publication).
//!
//! The `return` action means "crash right here": the process sends itself SIGKILL, so no
//! destructor or unwinding runs, exactly as when the process is killed mid-write. `sleep(ms)`,
//! `delay(ms)`, `panic`, `print`, `pause` and `off` behave as in the fail crate.

use std::ffi::OsString;

/// A slot is claimed (WRITING) and not one byte is written yet.
pub const AFTER_CLAIM: &str = "users-service::after-claim";
/// The first half of the body is written into the slot, the second half is not.
pub const MID_COPY: &str = "users-service::mid-copy";
/// Every byte is written and the slot is not yet published.
pub const BEFORE_PUBLISH: &str = "users-service::before-publish";
/// The gateway holds the slot (READING), before copying out and releasing it.
pub const MID_READ: &str = "gateway::mid-read";

/// Every point this build knows, so a misspelled name fails at start-up instead of never firing.
pub const ALL: [&str; 4] = [AFTER_CLAIM, MID_COPY, BEFORE_PUBLISH, MID_READ];

/// The environment variable [`setup`] reads.
pub const ENV_VAR: &str = "FAILPOINTS";

/// Whether this build has the fault points compiled in (the `failpoints` feature).
pub const COMPILED_IN: bool = cfg!(feature = "failpoints");

/// Why `FAILPOINTS` was refused; every variant stops the service at start-up.
#[derive(Debug, thiserror::Error)]
pub enum FailpointsError {
    #[error("{ENV_VAR} is not UTF-8: {0:?}")]
    NotUtf8(OsString),
    #[error("{ENV_VAR}: entry {0:?} is not of the form name=actions")]
    Malformed(String),
    #[error("{ENV_VAR}: unknown fault point {name:?}; known points: {known}")]
    UnknownPoint { name: String, known: String },
    #[error("{ENV_VAR}: fault point {0} has no actions")]
    NoActions(String),
    #[error("{ENV_VAR}: invalid actions {actions:?} for {name}: {reason}")]
    InvalidActions {
        name: String,
        actions: String,
        reason: String,
    },
    #[error(
        "{ENV_VAR} is set ({spec:?}) but this binary has no fault points: they are compiled only \
         into the chaos harness's own service build (`--features failpoints`); unset {ENV_VAR}"
    )]
    NotCompiledIn { spec: String },
}

/// Arms the points named in `FAILPOINTS`. Unset means none. Errors on a malformed entry, and,
/// in a build without the `failpoints` feature, on any non-empty value, so a fault scenario
/// never silently runs without its faults and a production binary never runs with them.
pub fn setup() -> Result<(), FailpointsError> {
    match std::env::var_os(ENV_VAR) {
        None => Ok(()),
        Some(value) => configure(&value.into_string().map_err(FailpointsError::NotUtf8)?),
    }
}

/// Arms the points of `spec` (`name=actions;name=actions`, empty entries ignored). All entries
/// are checked before any is armed, and an entry whose actions do not parse disarms the ones
/// armed before it, so an error leaves no point armed by this call.
pub fn configure(spec: &str) -> Result<(), FailpointsError> {
    let entries = parse(spec)?;
    if entries.is_empty() {
        return Ok(());
    }
    arm(spec, &entries)
}

#[cfg(feature = "failpoints")]
fn arm(spec: &str, entries: &[(&str, &str)]) -> Result<(), FailpointsError> {
    for (index, (name, actions)) in entries.iter().enumerate() {
        if let Err(reason) = fail::cfg(*name, actions) {
            for (armed, _) in &entries[..index] {
                fail::remove(armed);
            }
            return Err(FailpointsError::InvalidActions {
                name: (*name).to_owned(),
                actions: (*actions).to_owned(),
                reason,
            });
        }
    }
    tracing::warn!(failpoints = spec, "fault points armed");
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
fn arm(spec: &str, _entries: &[(&str, &str)]) -> Result<(), FailpointsError> {
    Err(FailpointsError::NotCompiledIn {
        spec: spec.to_owned(),
    })
}

/// Splits `spec` into (point, actions) pairs, refusing unknown points and entries without `=`.
fn parse(spec: &str) -> Result<Vec<(&str, &str)>, FailpointsError> {
    spec.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, actions) = entry
                .split_once('=')
                .ok_or_else(|| FailpointsError::Malformed(entry.to_owned()))?;
            let (name, actions) = (name.trim(), actions.trim());
            if !ALL.contains(&name) {
                return Err(FailpointsError::UnknownPoint {
                    name: name.to_owned(),
                    known: ALL.join(", "),
                });
            }
            if actions.is_empty() {
                return Err(FailpointsError::NoActions(name.to_owned()));
            }
            Ok((name, actions))
        })
        .collect()
}

/// Evaluates the point `name`: nothing unless armed; `return` kills the process on the spot.
#[cfg(feature = "failpoints")]
#[inline]
pub fn hit(name: &'static str) {
    fail::fail_point!(name, |_| crash(name));
}

/// Without the `failpoints` feature a point is nothing at all.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Ends the process with SIGKILL: no unwinding, no destructors, no flushed buffers, the same as
/// a `kill -9` from outside at this instant.
#[cfg(feature = "failpoints")]
fn crash(name: &str) -> ! {
    eprintln!("fault point {name}: crashing with SIGKILL");
    // SIGKILL cannot be caught or blocked, so raise does not return; abort is the fallback
    // that still runs no destructors.
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(spec: &str) -> String {
        configure(spec).unwrap_err().to_string()
    }

    #[test]
    fn empty_and_blank_specs_arm_nothing() {
        for spec in ["", " ", ";", " ; ;"] {
            configure(spec).unwrap();
        }
    }

    #[test]
    fn an_entry_without_equals_sign_is_refused() {
        let error = error_of("users-service::mid-copy");
        assert!(error.contains("is not of the form name=actions"), "{error}");
    }

    #[test]
    fn an_unknown_point_is_refused_naming_the_known_ones() {
        let error = error_of("users-service::mid-cpy=return");
        assert!(error.contains("unknown fault point"), "{error}");
        assert!(error.contains(MID_COPY), "{error}");
    }

    #[test]
    fn a_point_without_actions_is_refused() {
        let error = error_of("gateway::mid-read=");
        assert!(error.contains("has no actions"), "{error}");
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn malformed_actions_are_refused_and_arm_nothing() {
        // AFTER_CLAIM is valid and comes first: it must be disarmed again by the error.
        let error = error_of(&format!("{AFTER_CLAIM}=1*sleep(1);{MID_READ}=37*bogus"));
        assert!(error.contains("invalid actions"), "{error}");
        assert!(error.contains(MID_READ), "{error}");
        assert!(
            fail::list().iter().all(|(name, _)| name != AFTER_CLAIM),
            "{:?}",
            fail::list()
        );
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_build_without_the_feature_refuses_armed_points() {
        let error = error_of(&format!("{MID_COPY}=return"));
        assert!(error.contains("this binary has no fault points"), "{error}");
        assert!(error.contains("unset FAILPOINTS"), "{error}");
    }
}
