//! Load generator for the match-and-chat server, and the baseline relay it is measured
//! against (see `docs/BENCHMARKS.md`).
//!
//! - [`options`]: the flags of `matchchat-loadgen` (also the library's configuration).
//! - [`run`]: one run — connect, match, chat (closed or open loop) or hold, check, report.
//! - [`report`]: the figures, as one JSON line and a human summary.
//! - [`proto`]: the frames written and the cheap scans of the frames read.
//! - [`baseline`]: `matchchat-baseline`, the thinnest relay on the same stack.
//! - [`procfs`]: CPU time and RSS of a process, from `/proc`.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod options;
pub mod procfs;
pub mod proto;
pub mod report;
pub mod run;

pub use options::{Mode, Options, Target};
pub use report::Report;
pub use run::run;
