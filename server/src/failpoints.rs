//! Named fault points inside the shared-memory write and read paths, for the chaos harness.
//!
//! Built on the `fail` crate and compiled in only with the `failpoints` feature; without it
//! [`hit`] is empty. The points are armed at start-up from the `FAILPOINTS` environment variable
//! in the fail crate's format, `name=actions;name=actions`, e.g.
//! `FAILPOINTS="users-service::mid-copy=37*off->1*return"` (crash at the 38th publication).
//!
//! The `return` action means "crash right here": the process sends itself SIGKILL, so no
//! destructor or unwinding runs, exactly as when the process is killed mid-write. `sleep(ms)`,
//! `delay(ms)`, `panic`, `print`, `pause` and `off` behave as in the fail crate.

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

/// Arms the points named in `FAILPOINTS`. Unset means none. Errors on a malformed entry, and,
/// in a build without the `failpoints` feature, on any non-empty value, so a fault scenario
/// never silently runs without its faults.
pub fn setup() -> anyhow::Result<()> {
    match std::env::var_os(ENV_VAR) {
        None => Ok(()),
        Some(value) => {
            let spec = value
                .into_string()
                .map_err(|value| anyhow::anyhow!("{ENV_VAR} is not UTF-8: {value:?}"))?;
            configure(&spec)
        }
    }
}

/// Arms the points of `spec` (`name=actions;name=actions`, empty entries ignored). All entries
/// are checked before any is armed, and an entry whose actions do not parse disarms the ones
/// armed before it, so an error leaves no point armed by this call.
pub fn configure(spec: &str) -> anyhow::Result<()> {
    let entries = parse(spec)?;
    if entries.is_empty() {
        return Ok(());
    }
    if !cfg!(feature = "failpoints") {
        anyhow::bail!(
            "{ENV_VAR} is set ({spec:?}) but this binary was built without the `failpoints` \
             feature, so its fault points cannot fire"
        );
    }
    for (index, (name, actions)) in entries.iter().enumerate() {
        if let Err(error) = fail::cfg(*name, actions) {
            for (armed, _) in &entries[..index] {
                fail::remove(armed);
            }
            anyhow::bail!("{ENV_VAR}: invalid actions {actions:?} for {name}: {error}");
        }
    }
    tracing::warn!(failpoints = spec, "fault points armed");
    Ok(())
}

/// Splits `spec` into (point, actions) pairs, refusing unknown points and entries without `=`.
fn parse(spec: &str) -> anyhow::Result<Vec<(&str, &str)>> {
    spec.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, actions) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("{ENV_VAR}: entry {entry:?} is not of the form name=actions")
            })?;
            let (name, actions) = (name.trim(), actions.trim());
            if !ALL.contains(&name) {
                anyhow::bail!(
                    "{ENV_VAR}: unknown fault point {name:?}; known points: {}",
                    ALL.join(", ")
                );
            }
            if actions.is_empty() {
                anyhow::bail!("{ENV_VAR}: fault point {name} has no actions");
            }
            Ok((name, actions))
        })
        .collect()
}

/// Evaluates the point `name`: nothing unless armed; `return` kills the process on the spot.
#[inline]
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub fn hit(name: &'static str) {
    fail::fail_point!(name, |_| crash(name));
}

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
        assert!(
            error.contains("built without the `failpoints` feature"),
            "{error}"
        );
    }
}
