//! Live progress of a load run: an indicatif bar when stdout is a terminal, plain periodic
//! lines otherwise (logs, CI). Both go to stderr so stdout carries only the report.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A consistent-enough copy of the live counters (each read is atomic, the set is not).
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveSnapshot {
    pub elapsed: Duration,
    pub requests: u64,
    pub failed: u64,
    pub corrupt: u64,
    pub active_users: u64,
}

/// How progress is shown; `Auto` picks the bar on a terminal and lines elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    #[default]
    Auto,
    Bar,
    Lines,
    Quiet,
}

#[derive(Clone)]
pub struct Progress {
    display: Display,
    total_users: Option<u64>,
}

#[derive(Clone)]
enum Display {
    Bar(ProgressBar),
    Lines,
    Quiet,
}

const BAR_REFRESH: Duration = Duration::from_secs(1);
const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl Progress {
    /// `total_users` is shown as "active/total" in closed-loop runs and left out in open loop.
    pub fn new(mode: ProgressMode, duration: Duration, total_users: Option<u64>) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stdout().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        };
        let display = match mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(
                    Some(duration.as_secs().max(1)),
                    ProgressDrawTarget::stderr(),
                );
                bar.set_style(
                    ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                        .expect("constant template parses")
                        .progress_chars("=> "),
                );
                Display::Bar(bar)
            }
            ProgressMode::Lines => Display::Lines,
            ProgressMode::Auto | ProgressMode::Quiet => Display::Quiet,
        };
        Progress {
            display,
            total_users,
        }
    }

    /// A silent progress, for tests and embedding.
    pub fn quiet() -> Self {
        Progress::new(ProgressMode::Quiet, Duration::ZERO, None)
    }

    /// How often `update` should be called.
    pub fn interval(&self) -> Duration {
        match self.display {
            Display::Bar(_) => BAR_REFRESH,
            Display::Lines | Display::Quiet => LINE_INTERVAL,
        }
    }

    /// Prints a line (e.g. a corruption) without tearing the bar.
    pub fn note(&self, line: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(line),
            Display::Lines | Display::Quiet => eprintln!("{line}"),
        }
    }

    /// Shows `now`; `previous` (the last shown snapshot) gives the recent request rate.
    pub fn update(&self, now: &LiveSnapshot, previous: &LiveSnapshot) {
        let window = now.elapsed.saturating_sub(previous.elapsed).as_secs_f64();
        let rate = if window > 0.0 {
            (now.requests - previous.requests) as f64 / window
        } else {
            0.0
        };
        let users = match self.total_users {
            Some(total) => format!("users {}/{total}  ", now.active_users),
            None => String::new(),
        };
        let message = format!(
            "{users}req/s {rate:.1}  requests {}  failures {}  corrupt {}",
            now.requests, now.failed, now.corrupt
        );
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(now.elapsed.as_secs());
                bar.set_message(message);
            }
            Display::Lines => eprintln!("[{:>5.0}s] {message}", now.elapsed.as_secs_f64()),
            Display::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }
}
