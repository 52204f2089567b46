//! The HTTP access log (Envoy's HCM `access_log`): one line per request a
//! listener serves, written when its response ends, in Envoy's default
//! text format or Istio's default JSON, to files by writer threads that
//! the request path never waits for (`writer`). Off unless a listener
//! lists a log; then `http::service` begins an [`Entry`] per request.

pub mod flags;
pub mod format;
pub mod record;
pub mod writer;

use prometheus::IntCounter;

pub use self::flags::ResponseFlags;
pub use self::record::{Entry, Exchange, Record};
pub use self::writer::AccessLogError;
use self::writer::{MAX_QUEUED_LINES, Sink};
use crate::config::{AccessLogConfig, AccessLogFormat};

/// A listener's access logs (at most `config::MAX_ACCESS_LOGS`).
pub struct AccessLog {
    sinks: Vec<(AccessLogFormat, Sink)>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessLog({} files)", self.sinks.len())
    }
}

impl AccessLog {
    /// Opens every file and starts its writer; `dropped` counts the lines
    /// a full queue refused.
    pub fn open(logs: &[AccessLogConfig], dropped: &IntCounter) -> Result<Self, AccessLogError> {
        let sinks = logs
            .iter()
            .map(|l| {
                Ok((
                    l.format,
                    Sink::open(&l.path, dropped.clone(), MAX_QUEUED_LINES)?,
                ))
            })
            .collect::<Result<_, AccessLogError>>()?;
        Ok(Self { sinks })
    }

    /// Formats `r` once per format and queues it for every file (copied
    /// only for a file that is not the last in its format).
    pub fn write(&self, r: &Record) {
        let mut lines: [Option<String>; 2] = [None, None];
        for (i, (fmt, sink)) in self.sinks.iter().enumerate() {
            let line = lines[*fmt as usize].take().unwrap_or_else(|| {
                let mut s = String::with_capacity(256);
                match fmt {
                    AccessLogFormat::Text => format::text(r, &mut s),
                    AccessLogFormat::Json => format::json(r, &mut s),
                }
                s
            });
            if self.sinks[i + 1..].iter().any(|(f, _)| f == fmt) {
                lines[*fmt as usize] = Some(line.clone());
            }
            sink.send(line);
        }
    }
}
