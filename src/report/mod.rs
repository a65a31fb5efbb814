//! report: what the engine's output says after the fact. `kairos report uplift` measures,
//! per rule, how much more often subscribers who were sent an offer converted than the
//! ones held out as a control group.
//!
//! [`input`] reads decisions and response events (with ingest's reader and the decoder);
//! [`uplift`] is the pure part — groups, matching, statistics, rendering.

pub mod input;
pub mod uplift;

use std::path::PathBuf;

use input::Problem;
use uplift::{Conversion, InputCounts, UpliftReport};

/// What `kairos report uplift` reads and how it counts a conversion.
#[derive(Clone, Debug)]
pub struct UpliftOptions {
    /// Decision files (or folders of them, or `kairos replay` output folders).
    pub decisions: Vec<PathBuf>,
    /// Event files or folders holding the `response` events.
    pub events: Vec<PathBuf>,
    pub conversion: Conversion,
}

/// The report and the skipped lines worth showing (the first few of each input).
#[derive(Debug)]
pub struct UpliftRun {
    pub report: UpliftReport,
    pub problems: Vec<Problem>,
}

/// Reads the inputs and measures the uplift. Errors (one line) only when an input cannot
/// be read; lines that are not a decision or not an event are counted in the report.
pub fn uplift(options: &UpliftOptions) -> Result<UpliftRun, String> {
    let decisions = input::read_decisions(&options.decisions)?;
    let responses = input::read_responses(&options.events)?;
    let measured = uplift::measure(&decisions.records, &responses.records, &options.conversion);
    let inputs = InputCounts {
        decision_files: decisions.files,
        malformed_decision_lines: decisions.problem_count,
        event_files: responses.files,
        responses: responses.records.len() as u64,
        other_events: responses.skipped,
        invalid_event_lines: responses.problem_count,
        ..InputCounts::default()
    };
    let mut problems = decisions.problems;
    problems.extend(responses.problems);
    Ok(UpliftRun {
        report: UpliftReport::new(measured, &options.conversion, inputs),
        problems,
    })
}
