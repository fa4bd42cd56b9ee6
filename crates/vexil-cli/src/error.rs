//! The one error type of the CLI, and the exit code each kind maps to.

use std::fmt;

/// Exit code for an error the server answered (4xx/5xx) or another runtime failure.
pub const EXIT_API: u8 = 1;
/// Exit code for a usage error; clap uses the same for the ones it finds.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the server cannot be reached at all.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code of `vexil audit verify` when the server reports the audit chain broken: the
/// check ran and found tampering or loss, which a script must tell apart from failing to run.
pub const EXIT_CHAIN_BROKEN: u8 = 4;

/// Everything that can go wrong in one `vexil` invocation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error (an RFC 9457 problem, or a bare status).
    #[error("{0}")]
    Api(Problem),
    /// Nothing answered at the URL (refused, unresolvable, timed out).
    #[error("cannot reach the Vexil server at {url}: {reason}")]
    Unreachable {
        /// The URL that was tried.
        url: String,
        /// The transport's explanation, innermost cause included.
        reason: String,
    },
    /// The command line or an input file is not usable as given.
    #[error("{0}")]
    Usage(String),
    /// A local file or stream could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server answered something the CLI cannot read (not the JSON the API documents).
    #[error("unexpected response from {url}: {reason}")]
    Protocol {
        /// The URL that answered.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// `vexil audit verify` found the audit chain broken.
    #[error("the audit chain is broken at seq {seq}: {reason}")]
    ChainBroken {
        /// The first event that does not follow.
        seq: u64,
        /// What does not hold there.
        reason: String,
    },
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Unreachable { .. } => EXIT_UNREACHABLE,
            Error::ChainBroken { .. } => EXIT_CHAIN_BROKEN,
            Error::Api(_) | Error::Io { .. } | Error::Protocol { .. } => EXIT_API,
        }
    }

    /// Whether this is a write to a closed pipe (`vexil flag list | head`), which is not
    /// worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// An error the server answered, as its problem+json body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The short, stable summary (`title`).
    pub title: String,
    /// What happened in this case (`detail`).
    pub detail: String,
    /// Per-field errors (`errors[].field`, `errors[].message`), when the server listed any.
    pub fields: Vec<(String, String)>,
}

impl Problem {
    /// Reads a problem from an error response body, falling back to the status line and the
    /// body text when the body is not a problem (a proxy's error page, say).
    pub(crate) fn from_body(status: u16, reason: &str, body: &[u8]) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        match parsed {
            Some(v) if v.get("title").is_some() || v.get("detail").is_some() => Problem {
                status,
                title: text(v.get("title")).unwrap_or_else(|| reason.to_owned()),
                detail: text(v.get("detail")).unwrap_or_default(),
                fields: v
                    .get("errors")
                    .and_then(|e| e.as_array())
                    .map(|errors| {
                        errors
                            .iter()
                            .map(|e| {
                                (
                                    text(e.get("field")).unwrap_or_default(),
                                    text(e.get("message")).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            _ => Problem {
                status,
                title: reason.to_owned(),
                detail: String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
                fields: Vec::new(),
            },
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        for (field, message) in &self.fields {
            let field = if field.is_empty() {
                "(document)"
            } else {
                field
            };
            write!(f, "\n  {field}: {message}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_body_is_shown_as_status_title_and_detail() {
        let body = br#"{"type":"urn:vexil:problem:version-conflict","title":"Version conflict","status":412,"detail":"flag f is at version 2, not 1"}"#;
        let p = Problem::from_body(412, "Precondition Failed", body);
        assert_eq!(
            p.to_string(),
            "412 Version conflict: flag f is at version 2, not 1"
        );
    }

    #[test]
    fn a_broken_audit_chain_has_its_own_exit_code() {
        let e = Error::ChainBroken {
            seq: 7,
            reason: "prevHash is not the hash of event 6".to_owned(),
        };
        assert_eq!(e.exit_code(), EXIT_CHAIN_BROKEN);
        assert_eq!(
            e.to_string(),
            "the audit chain is broken at seq 7: prevHash is not the hash of event 6"
        );
    }

    #[test]
    fn a_body_that_is_not_a_problem_falls_back_to_the_status_line() {
        let p = Problem::from_body(502, "Bad Gateway", b"<html>bad gateway</html>");
        assert_eq!(p.to_string(), "502 Bad Gateway: <html>bad gateway</html>");
    }
}
