//! Progress display: bars under one `MultiProgress`, lines printed above them (or on stdout when
//! they are hidden), and the one-line summary of a finished run.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::record::RunResult;

/// The style of a bar with a known length.
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        .expect("valid template")
        .progress_chars("=> ")
}

/// The style of a spinner (a run in another process).
pub fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24} {spinner} {msg} ({elapsed})")
        .expect("valid template")
}

/// A new bar under `progress`.
pub fn bar(progress: &MultiProgress, prefix: String) -> ProgressBar {
    let bar = progress.add(ProgressBar::new(0));
    bar.set_style(bar_style());
    bar.set_prefix(prefix);
    bar
}

/// Prints a line above the progress bars, or on stdout when they are hidden (not a terminal).
pub fn say(progress: &MultiProgress, line: String) {
    if progress.is_hidden() {
        println!("{line}");
    } else {
        let _ = progress.println(line);
    }
}

/// The one-line summary of a finished run (`None`: stopped early by `--stop-after`).
pub fn report_run(progress: &MultiProgress, variant: &str, r: Option<&RunResult>) {
    let line = match r {
        Some(r) => format!(
            "{:>24}  seed {}  best epoch {}  test mIoU {:.2}  oIoU {:.2}  ({:.0} s training)",
            r.variant, r.seed, r.best_epoch, r.test.miou, r.test.oiou, r.train_seconds
        ),
        None => format!("{variant:>24}  stopped early (resumable)"),
    };
    say(progress, line);
}
