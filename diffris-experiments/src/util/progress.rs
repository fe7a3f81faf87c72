//! Progress display: bars under one `MultiProgress`, lines printed above them (or on stdout when
//! they are hidden), the one-line summary of a finished run, and the [`Heartbeat`] lines of
//! runs nobody watches.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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

/// Progress lines at a fixed interval, for runs nobody watches (stdout not a terminal, or a run
/// in its own process): each names what is done of what, the rate, the time left and the peak
/// memory, plus what the caller adds. Every line also goes to a file (the run directory's
/// `progress.log`) when one is given.
#[derive(Clone)]
pub struct Heartbeat {
    label: String,
    every: Duration,
    to_stdout: bool,
    file: Option<PathBuf>,
    last: Option<Instant>,
    /// The first beat of this process: (when, units done then).
    first: Option<(Instant, u64)>,
    /// What the device's memory holds, where its backend says (a GPU's pool), for each line.
    device_memory: Option<DeviceMemoryLine>,
}

/// A reader of a device's memory as a line fragment (`", device pool 9.8 GiB reserved"`), or
/// `None` where the backend does not say.
pub type DeviceMemoryLine = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Heartbeat {
    /// Lines labelled `label`, at most one per `every`; printed on stdout when `to_stdout`.
    pub fn new(label: String, every: Duration, to_stdout: bool, file: Option<PathBuf>) -> Self {
        Self {
            label,
            every,
            to_stdout,
            file,
            last: None,
            first: None,
            device_memory: None,
        }
    }

    /// Each line also says what `read` reports of the device's memory.
    pub fn with_device_memory(mut self, read: DeviceMemoryLine) -> Self {
        self.device_memory = Some(read);
        self
    }

    /// Reports `done` of `total` samples; writes a line when `every` has passed since the last
    /// one (or `done == total`), with `extra` appended.
    pub fn beat(&mut self, done: u64, total: u64, extra: impl FnOnce() -> String) {
        let now = Instant::now();
        let (t0, d0) = *self.first.get_or_insert((now, done));
        let due = self.last.is_none_or(|l| now - l >= self.every) || done >= total;
        if !due {
            return;
        }
        self.last = Some(now);
        let secs = (now - t0).as_secs_f64();
        let rate = if secs > 0.0 {
            done.saturating_sub(d0) as f64 / secs
        } else {
            0.0
        };
        let eta = if rate > 0.0 {
            format_duration(total.saturating_sub(done) as f64 / rate)
        } else {
            "-".into()
        };
        let memory = peak_rss_bytes().map_or("-".into(), |b| {
            format!("{:.2} GiB", b as f64 / f64::from(1u32 << 30))
        });
        // Full-size training on a CPU runs at a fraction of a sample per second: say how long
        // one sample takes instead of printing 0.0.
        let speed = if rate > 0.0 && rate < 0.1 {
            format!("{:.1} s/sample", 1.0 / rate)
        } else {
            format!("{rate:.1} samples/s")
        };
        let device = self
            .device_memory
            .as_ref()
            .and_then(|read| read())
            .unwrap_or_default();
        let line = format!(
            "{}: {done}/{total} samples ({:.0}%), {speed}, ETA {eta}, peak RSS {memory}{device}{}",
            self.label,
            100.0 * done as f64 / total.max(1) as f64,
            extra()
        );
        if self.to_stdout {
            println!("{line}");
        }
        if let Some(file) = &self.file
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
        {
            // Best effort: a full disk must not stop training; the run's records are written
            // (and their errors reported) elsewhere.
            let _ = writeln!(f, "{line}");
        }
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

/// The peak resident memory of this process (Linux: `VmHWM`); `None` where the OS does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(format_duration(42.4), "42s");
        assert_eq!(format_duration(185.0), "3m05s");
        assert_eq!(format_duration(3720.0), "1h02m");
    }

    #[test]
    fn lines_come_at_the_interval_and_at_the_end_and_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("progress.log");
        let mut h = Heartbeat::new(
            "run".into(),
            Duration::from_secs(3600),
            false,
            Some(file.clone()),
        );
        h.beat(1, 10, || " | first".into()); // the first beat always writes
        h.beat(5, 10, || " | too soon".into());
        h.beat(10, 10, || " | done".into()); // the last one too
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("run: 1/10 samples (10%)") && lines[0].ends_with("| first"));
        assert!(lines[1].starts_with("run: 10/10 samples (100%)") && lines[1].ends_with("| done"));
        assert!(lines[1].contains("samples/s") && lines[1].contains("ETA"));
    }

    #[test]
    fn lines_carry_the_device_memory_where_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("progress.log");
        let mut h = Heartbeat::new("run".into(), Duration::ZERO, false, Some(file.clone()))
            .with_device_memory(std::sync::Arc::new(|| Some(", device X".into())));
        h.beat(1, 2, || " | extra".into());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.trim_end().ends_with(", device X | extra"), "{text}");
    }
}
