//! Where runs write, what they may reuse, and how they behave towards an existing run directory.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar};

use crate::config::RunDir;
use crate::util::progress::Heartbeat;

/// Where runs write and what they may reuse.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub results: PathBuf,
    pub cache: PathBuf,
    pub threads: usize,
    /// Continue an unfinished run from its last checkpoint.
    pub resume: bool,
    /// Delete an unfinished or different run and start over.
    pub restart: bool,
    /// Stop after this many epochs (simulates an interruption; the run stays unfinished).
    pub stop_after: Option<usize>,
    pub progress: MultiProgress,
    /// The interval of progress lines when nobody watches the bars.
    pub log_every: Duration,
    /// What one run may use of its device (its evaluation and encoding batches fit it).
    pub budget: crate::plan::Budget,
}

impl Workspace {
    /// A progress bar under this workspace's display.
    pub fn bar(&self, prefix: String) -> ProgressBar {
        crate::util::progress::bar(&self.progress, prefix)
    }

    /// Progress lines labelled `label` into the run's `progress.log`, and on stdout when the
    /// bars are hidden (stdout not a terminal, or a run in its own process).
    pub fn heartbeat(&self, label: String, run_dir: &RunDir) -> Heartbeat {
        Heartbeat::new(
            label,
            self.log_every,
            self.progress.is_hidden(),
            Some(run_dir.progress_log()),
        )
    }
}
