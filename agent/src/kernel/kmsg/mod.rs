//! The kernel log: its records (`/dev/kmsg` and syslog(2) framings), the events
//! nodediag looks for in them, and the two ways to read it. Parsing and matching are
//! pure; `source` holds the only I/O.

mod event;
mod matcher;
mod record;
mod source;

pub use event::{EventKind, KernelEvent, OomKill};
pub use matcher::Matcher;
pub use record::{parse_kmsg_record, parse_syslog_line, LogRecord, RecordSplitter};
pub use source::{open_at_end, read_syslog_buffer};
