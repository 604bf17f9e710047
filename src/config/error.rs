//! Configuration errors: every bad field, each with its path.

use std::fmt;

/// One bad field: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: the YAML path (`certificates[1].dnsNames[0]`), or in flag mode
    /// the flag (`--dns-name`).
    pub path: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// The file (or "the command line") the configuration came from.
    pub source_name: String,
    /// Every problem, in the order found.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{} has {} problem{}:",
            self.source_name,
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

/// Collects the problems of one validation pass, so that all are reported at once.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    /// Records a problem at `path`.
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}
