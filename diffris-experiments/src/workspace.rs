//! Where runs write, what they may reuse, and how they behave towards an existing run directory.

use std::path::PathBuf;

use indicatif::{MultiProgress, ProgressBar};

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
}

impl Workspace {
    /// A progress bar under this workspace's display.
    pub fn bar(&self, prefix: String) -> ProgressBar {
        crate::progress::bar(&self.progress, prefix)
    }
}
