//! Progress of the long-running commands (`backup`, `restore`): a bar on a terminal, plain lines
//! in a pipe, JSON Lines on stdout under `--json`.
//!
//! The commands call [`Progress`]; they never print progress themselves. Events carry kinds,
//! names, sizes and reasons — never values.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::json_document;
use super::table::human_bytes;

/// How progress is shown, chosen once per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A single redrawn line on stderr (stderr is a terminal).
    Bar,
    /// One line per notable event on stderr (a pipe or a log file).
    Lines,
    /// One JSON document per event on stdout (`--json`).
    JsonLines,
}

impl ProgressStyle {
    /// `--json` wins; otherwise a bar when stderr is a terminal, lines when it is not.
    pub fn detect(json: bool) -> Self {
        if json {
            Self::JsonLines
        } else if std::io::stderr().is_terminal() {
            Self::Bar
        } else {
            Self::Lines
        }
    }
}

/// One thing that happened to one item.
#[derive(Debug, Clone, Serialize)]
pub struct ItemEvent<'a> {
    /// The vault's name.
    pub vault: &'a str,
    /// `secret`, `key` or `certificate`.
    pub kind: &'a str,
    /// The item's name.
    pub name: &'a str,
    /// What happened: `captured`, `skipped`, `failed`, `created`, `recovered`, …
    pub status: &'a str,
    /// Why, for anything but plain success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Bytes written for this item, where that means something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// What the periodic progress line of a long run says (`docs/SCRIPTING.md`, "Progress
/// lines"): `progress: VAULT: DONE/LISTED items, RATE req/s, THROTTLED throttled (429)`.
#[derive(Debug, Clone)]
pub struct PeriodicReport<'a> {
    /// The vault's name.
    pub vault: &'a str,
    /// Items in scope listed so far.
    pub listed: u64,
    /// Every list has been read to its end (`LISTED` is the final count).
    pub listing_done: bool,
    /// Requests per second since the previous line.
    pub requests_per_second: f64,
    /// 429 answers received since the run began.
    pub throttled: u64,
}

/// The progress reporter of one run; shared by every worker (`Sync`).
#[derive(Debug)]
pub struct Progress {
    style: ProgressStyle,
    problem_lines: bool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    vault: String,
    total: u64,
    done: u64,
    problems: u64,
    bytes: u64,
    last_draw: Option<Instant>,
}

/// How often the bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    /// A reporter in the given style.
    pub fn new(style: ProgressStyle) -> Self {
        Self {
            style,
            problem_lines: true,
            state: Mutex::new(State {
                vault: String::new(),
                total: 0,
                done: 0,
                problems: 0,
                bytes: 0,
                last_draw: None,
            }),
        }
    }

    /// A reporter that counts items with a problem but does not print them on stderr as
    /// they happen: for commands whose summary names each of them with its reason, so a
    /// reason is printed once. `--json` events are unaffected.
    pub fn without_problem_lines(mut self) -> Self {
        self.problem_lines = false;
        self
    }

    /// The style in use.
    pub fn style(&self) -> ProgressStyle {
        self.style
    }

    /// The number of items known to be coming so far (replaces the count).
    pub fn set_total(&self, items: u64) {
        let mut state = self.lock();
        state.total = items;
    }

    /// The periodic one-line report for logs: printed on stderr in the `Lines` style only
    /// (a terminal has the bar; `--json` has its events).
    pub fn periodic(&self, report: &PeriodicReport<'_>) {
        if self.style != ProgressStyle::Lines {
            return;
        }
        let state = self.lock();
        let line = periodic_line(report, state.done, state.problems);
        drop(state);
        eprintln!("{line}");
    }

    /// A new vault's run begins; counters start again.
    pub fn start_vault(&self, vault: &str) {
        let mut state = self.lock();
        *state = State {
            vault: vault.to_owned(),
            total: 0,
            done: 0,
            problems: 0,
            bytes: 0,
            last_draw: None,
        };
        drop(state);
        self.note(&format!("{vault}: started"));
    }

    /// More items are known to be coming (after each listed page).
    pub fn add_total(&self, items: u64) {
        let mut state = self.lock();
        state.total += items;
        self.draw(&mut state, false);
    }

    /// One item reached its end state.
    pub fn item(&self, event: &ItemEvent<'_>) {
        let mut state = self.lock();
        state.done += 1;
        state.bytes += event.bytes.unwrap_or(0);
        let notable = event.reason.is_some();
        if notable {
            state.problems += 1;
        }
        match self.style {
            ProgressStyle::JsonLines => emit_json("item", event),
            ProgressStyle::Lines if notable && self.problem_lines => {
                eprintln!("{}", describe(event))
            }
            ProgressStyle::Bar if notable && self.problem_lines => {
                clear_line();
                eprintln!("{}", describe(event));
                self.draw(&mut state, true);
            }
            _ => self.draw(&mut state, false),
        }
    }

    /// A free-form message for people (stderr; nothing under `--json`).
    pub fn note(&self, text: &str) {
        match self.style {
            ProgressStyle::JsonLines => {}
            ProgressStyle::Lines => eprintln!("{text}"),
            ProgressStyle::Bar => {
                clear_line();
                eprintln!("{text}");
            }
        }
    }

    /// The vault's run is over: the bar is cleared so the summary prints cleanly.
    pub fn finish_vault(&self) {
        if self.style == ProgressStyle::Bar {
            clear_line();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a worker panicked mid-update; the counters stay usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn draw(&self, state: &mut State, force: bool) {
        if self.style != ProgressStyle::Bar {
            return;
        }
        let now = Instant::now();
        if !force
            && state
                .last_draw
                .is_some_and(|t| now.duration_since(t) < REDRAW)
        {
            return;
        }
        state.last_draw = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{}: {}/{} items, {} problems, {}",
            state.vault,
            state.done,
            state.total,
            state.problems,
            human_bytes(state.bytes)
        );
        let _ = err.flush();
    }
}

fn clear_line() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

fn periodic_line(report: &PeriodicReport<'_>, done: u64, problems: u64) -> String {
    let more = if report.listing_done { "" } else { "+" };
    let problems = if problems > 0 {
        format!(" ({problems} not captured)")
    } else {
        String::new()
    };
    format!(
        "progress: {}: {done}/{}{more} items{problems}, {:.0} req/s, {} throttled (429)",
        report.vault, report.listed, report.requests_per_second, report.throttled
    )
}

fn describe(event: &ItemEvent<'_>) -> String {
    match event.reason {
        Some(reason) => format!(
            "{}: {} {} {}: {reason}",
            event.vault, event.kind, event.name, event.status
        ),
        None => format!(
            "{}: {} {} {}",
            event.vault, event.kind, event.name, event.status
        ),
    }
}

/// Prints one JSON Lines event on stdout.
pub fn emit_json<T: Serialize>(kind: &str, body: &T) {
    if let Ok(line) = json_document(kind, body) {
        let mut out = super::stdout::report();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_line_format() {
        let mut report = PeriodicReport {
            vault: "prod",
            listed: 2000,
            listing_done: true,
            requests_per_second: 211.6,
            throttled: 3,
        };
        assert_eq!(
            periodic_line(&report, 1520, 0),
            "progress: prod: 1520/2000 items, 212 req/s, 3 throttled (429)"
        );
        report.listing_done = false;
        assert_eq!(
            periodic_line(&report, 1520, 2),
            "progress: prod: 1520/2000+ items (2 not captured), 212 req/s, 3 throttled (429)"
        );
    }

    #[test]
    fn problem_lines_name_item_and_reason() {
        let event = ItemEvent {
            vault: "prod",
            kind: "secret",
            name: "db",
            status: "skipped",
            reason: Some("disabled: value not readable (403 SecretDisabled)"),
            bytes: None,
        };
        assert_eq!(
            describe(&event),
            "prod: secret db skipped: disabled: value not readable (403 SecretDisabled)"
        );
    }
}

/// The engine's progress, shown in this reporter's style: under `--json` one `item` event
/// per item (with its method and reason), otherwise the bar or lines, where only problems
/// carry their reason (a success's detail is in the summary or the plan).
impl crate::engine::progress::Progress for Progress {
    fn note(&self, text: &str) {
        Progress::note(self, text);
    }

    fn add_total(&self, items: u64) {
        Progress::add_total(self, items);
    }

    fn item(&self, event: &crate::engine::progress::ItemEvent<'_>) {
        if self.style == ProgressStyle::JsonLines {
            emit_json("item", &JsonItem::of(event));
            return;
        }
        Progress::item(
            self,
            &ItemEvent {
                vault: event.vault,
                kind: event.kind.as_str(),
                name: event.name,
                status: event.status,
                reason: if event.problem { event.reason } else { None },
                bytes: event.bytes,
            },
        );
    }
}

/// The `item` event of `docs/SCRIPTING.md`.
#[derive(Serialize)]
struct JsonItem<'a> {
    vault: &'a str,
    kind: crate::model::ItemKind,
    name: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

impl<'a> JsonItem<'a> {
    fn of(event: &crate::engine::progress::ItemEvent<'a>) -> Self {
        Self {
            vault: event.vault,
            kind: event.kind,
            name: event.name,
            status: event.status,
            method: event.method,
            reason: event.reason,
            bytes: event.bytes,
        }
    }
}
