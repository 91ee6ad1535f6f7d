//! Shared by the integration tests: one parsed outcome line, the comparison
//! rule SPEC fixes for it, and a way to push a whole stream through
//! `runner::run`.
//!
//! The comparison follows `examples/README.md`: `line`, `result`, `replayed`
//! (absent means false) and the named outcome fields are fixed; the `error`
//! text of a malformed line is free-form, and fields beyond the named ones
//! are allowed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

/// The outcome fields SPEC names; a test compares these and ignores others.
pub const NAMED_FIELDS: [&str; 6] = ["balance", "held", "available", "op", "status", "entries"];

/// The engine's default dedup window: 24 hours of engine time.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 86_400_000;

/// One outcome line, reduced to the parts SPEC fixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub line: u64,
    pub result: String,
    pub replayed: bool,
    /// Named fields present on the line, each as its string value (or, when
    /// the engine wrote something other than a string, its JSON text).
    pub fields: BTreeMap<String, String>,
}

impl Outcome {
    pub fn new(line: u64, result: &str) -> Outcome {
        Outcome {
            line,
            result: result.to_string(),
            ..Outcome::default()
        }
    }

    pub fn with(mut self, name: &str, value: String) -> Outcome {
        self.fields.insert(name.to_string(), value);
        self
    }

    /// Parses one outcome line as the engine or an `.outcomes.jsonl` file
    /// writes it.
    pub fn parse(text: &str) -> Result<Outcome, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("outcome is not JSON ({e}): {text:?}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| format!("outcome is not a JSON object: {text:?}"))?;
        let line = object
            .get("line")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| format!("outcome has no integer `line`: {text:?}"))?;
        let result = object
            .get("result")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("outcome has no string `result`: {text:?}"))?
            .to_string();
        let replayed = match object.get("replayed") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => return Err(format!("`replayed` is not a boolean ({other}): {text:?}")),
        };
        let mut fields = BTreeMap::new();
        for name in NAMED_FIELDS {
            if let Some(v) = object.get(name) {
                let shown = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => format!("<non-string {other}>"),
                };
                fields.insert(name.to_string(), shown);
            }
        }
        Ok(Outcome {
            line,
            result,
            replayed,
            fields,
        })
    }

    /// Checks `actual` against this expected outcome; `Err` says what differs.
    pub fn check(&self, actual: &Outcome) -> Result<(), String> {
        let mut problems = Vec::new();
        if actual.line != self.line {
            problems.push(format!("line {} instead of {}", actual.line, self.line));
        }
        if actual.result != self.result {
            problems.push(format!(
                "result {:?} instead of {:?}",
                actual.result, self.result
            ));
        }
        if actual.replayed != self.replayed {
            problems.push(format!(
                "replayed {} instead of {}",
                actual.replayed, self.replayed
            ));
        }
        for (name, want) in &self.fields {
            match actual.fields.get(name) {
                None => problems.push(format!("field `{name}` missing (want {want:?})")),
                Some(got) if got != want => {
                    problems.push(format!("field `{name}` is {got:?} instead of {want:?}"))
                }
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{\"line\": {}, \"result\": {:?}",
            self.line, self.result
        )?;
        if self.replayed {
            write!(f, ", \"replayed\": true")?;
        }
        for (name, value) in &self.fields {
            write!(f, ", {name:?}: {value:?}")?;
        }
        write!(f, "}}")
    }
}

/// Runs `input` through `runner::run` with a manual clock and returns the
/// output lines.
pub fn run_engine(input: Vec<u8>, shards: usize, dedup_window_ms: u64) -> Vec<String> {
    let options = debitcore::runner::RunOptions {
        shards,
        manual_clock: true,
        dedup_window_ms,
    };
    let mut output = Vec::new();
    debitcore::runner::run(std::io::Cursor::new(input), &mut output, &options)
        .expect("runner::run returned an I/O error over in-memory buffers");
    split_output(&output)
}

/// Splits runner output into lines; the output must be UTF-8 and every line
/// must end with a newline.
pub fn split_output(output: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(output).expect("runner output is not UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "runner output does not end with a newline: ...{:?}",
        &text[text.len().saturating_sub(200)..]
    );
    text.lines().map(str::to_string).collect()
}

/// Compares a whole output stream with the expected outcomes, line by line.
/// `requests` are the input lines, used only to make a failure readable.
pub fn compare_streams(
    requests: &[&str],
    expected: &[Outcome],
    actual: &[String],
) -> Result<(), String> {
    for (index, want) in expected.iter().enumerate() {
        let request = requests.get(index).copied().unwrap_or("<none>");
        let Some(got_text) = actual.get(index) else {
            return Err(format!(
                "output stops after {} lines; line {} ({request}) expected {want}",
                actual.len(),
                index + 1
            ));
        };
        let got = Outcome::parse(got_text)
            .map_err(|e| format!("line {}: {request}\n  {e}", index + 1))?;
        if let Err(why) = want.check(&got) {
            return Err(format!(
                "line {}: {request}\n  expected: {want}\n  actual:   {got_text}\n  ({why})",
                index + 1
            ));
        }
    }
    if actual.len() > expected.len() {
        return Err(format!(
            "{} extra output lines, first: {}",
            actual.len() - expected.len(),
            actual[expected.len()]
        ));
    }
    Ok(())
}
