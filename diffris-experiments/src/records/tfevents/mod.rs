//! Scalars as TensorBoard reads them: event files (`events.out.tfevents.*`), the TFRecord
//! framing of `Event` protocol buffers, written here without a protobuf library.
//!
//! A record is `length: u64 LE, masked_crc32c(length): u32 LE, data, masked_crc32c(data): u32
//! LE`, where the mask is `((crc >> 15) | (crc << 17)) + 0xa282ead8` over CRC-32C (Castagnoli).
//! The messages, from TensorFlow's `event.proto` and `summary.proto`, with only the fields
//! written here: `Event { double wall_time = 1; int64 step = 2; string file_version = 3;
//! Summary summary = 5; SessionLog session_log = 7; }`, `Summary { repeated Value value = 1; }`,
//! `Summary.Value { string tag = 1; float simple_value = 2; }`, `SessionLog { SessionStatus
//! status = 1; }` with `START = 1`. A file starts with the `file_version` event
//! `brain.Event:2`. A `START` session log at step S tells TensorBoard to drop what earlier files
//! hold at steps from S on: a resumed run writes one at its first step, so the steps a killed
//! process logged past its last checkpoint do not show twice.
//!
//! `tools/read_tfevents.py` reads a file written here with TensorBoard's own reader; its output
//! is committed beside that file as a fixture, and a test checks that this writer still
//! produces those bytes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const POLY: u32 = 0x82F6_3B78;
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The masked CRC TFRecord stores (so that a CRC of data holding CRCs is not degenerate).
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: `data` framed with its length and both checksums.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, ((field << 3) | 2) as u64);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The head of an `Event`: its wall time (seconds since the epoch) and step.
fn event_head(wall_time: f64, step: i64) -> Vec<u8> {
    let mut out = vec![(1 << 3) | 1];
    out.extend_from_slice(&wall_time.to_le_bytes());
    varint(&mut out, 2 << 3);
    // int64 as a varint: negative steps take ten bytes (two's complement), as protobuf's.
    varint(&mut out, step as u64);
    out
}

/// `Event { wall_time, step: 0, file_version: "brain.Event:2" }`.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = event_head(wall_time, 0);
    bytes_field(&mut out, 3, b"brain.Event:2");
    out
}

/// `Event { wall_time, step, session_log: { status: START } }`.
pub fn session_start_event(wall_time: f64, step: i64) -> Vec<u8> {
    let mut out = event_head(wall_time, step);
    bytes_field(&mut out, 7, &[1 << 3, 1]);
    out
}

/// `Event { wall_time, step, summary: { value: [{ tag, simple_value }] } }`.
pub fn scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
    let mut val = Vec::new();
    bytes_field(&mut val, 1, tag.as_bytes());
    val.push((2 << 3) | 5);
    val.extend_from_slice(&value.to_le_bytes());
    let mut summary = Vec::new();
    bytes_field(&mut summary, 1, &val);
    let mut out = event_head(wall_time, step);
    bytes_field(&mut out, 5, &summary);
    out
}

/// One scalar at one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub wall_time: f64,
    pub step: i64,
    pub tag: String,
    pub value: f64,
}

impl Scalar {
    /// The scalar as one JSON line (without its newline).
    pub fn json_line(&self) -> String {
        serde_json::json!({
            "wall_time": self.wall_time,
            "step": self.step,
            "tag": self.tag,
            "value": self.value,
        })
        .to_string()
    }
}

/// An event file of one process, and the JSON lines of the same scalars (`scalars.jsonl`).
pub struct EventFile {
    file: File,
    path: PathBuf,
    json: File,
}

/// The scalar JSON lines file of a run folder.
pub const SCALARS_JSONL: &str = "scalars.jsonl";

impl EventFile {
    /// A new event file in `dir` (`events.out.tfevents.SECONDS.diffris.PID.N`), starting at
    /// `first_step`: steps a previous process logged from there on are dropped, by a `START`
    /// session log in the event file and by rewriting `scalars.jsonl` without them.
    pub fn create(dir: &Path, first_step: i64, wall_time: f64) -> std::io::Result<Self> {
        let jsonl = dir.join(SCALARS_JSONL);
        let kept = match std::fs::read_to_string(&jsonl) {
            Ok(text) => text
                .lines()
                .filter(|l| step_of(l).is_some_and(|s| s < first_step))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        crate::util::atomic_file::write_atomic(&jsonl, kept.as_bytes())
            .map_err(std::io::Error::other)?;
        Self::open(dir, (first_step > 0).then_some(first_step), wall_time)
    }

    /// A new event file in `dir` that adds to what the run logged (no purge), its scalars also
    /// appended to `scalars.jsonl`.
    pub fn append(dir: &Path, wall_time: f64) -> std::io::Result<Self> {
        Self::open(dir, None, wall_time)
    }

    fn open(dir: &Path, start: Option<i64>, wall_time: f64) -> std::io::Result<Self> {
        let json = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(SCALARS_JSONL))?;
        // Seconds, process and a count within the process: two files of one process in one
        // second (a run's training file and its test file) never share a name.
        static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "events.out.tfevents.{}.diffris.{}.{n}",
            wall_time as u64,
            std::process::id()
        ));
        let mut file = File::create(&path)?;
        file.write_all(&record(&file_version_event(wall_time)))?;
        if let Some(step) = start {
            file.write_all(&record(&session_start_event(wall_time, step)))?;
        }
        file.flush()?;
        Ok(Self { file, path, json })
    }

    /// The largest step of `dir`'s `scalars.jsonl` (0 when it has none).
    pub fn last_step(dir: &Path) -> i64 {
        std::fs::read_to_string(dir.join(SCALARS_JSONL))
            .map(|text| text.lines().filter_map(step_of).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `scalars` to both files.
    pub fn write(&mut self, scalars: &[Scalar]) -> std::io::Result<()> {
        let mut events = Vec::new();
        let mut lines = String::new();
        for s in scalars {
            events.extend(record(&scalar_event(
                s.wall_time,
                s.step,
                &s.tag,
                s.value as f32,
            )));
            lines.push_str(&s.json_line());
            lines.push('\n');
        }
        self.file.write_all(&events)?;
        self.file.flush()?;
        self.json.write_all(lines.as_bytes())?;
        self.json.flush()
    }
}

/// An event file whose failures are warnings: scalars are a run's side record, so a folder that
/// cannot take them leaves the run without them (said once), never without its results.
pub struct ScalarSink(Option<EventFile>);

impl ScalarSink {
    /// [`EventFile::create`], or nothing after a warning.
    pub fn create(dir: &Path, first_step: i64) -> Self {
        Self::or_warn(dir, EventFile::create(dir, first_step, now()))
    }

    /// [`EventFile::append`], or nothing after a warning.
    pub fn append(dir: &Path) -> Self {
        Self::or_warn(dir, EventFile::append(dir, now()))
    }

    fn or_warn(dir: &Path, file: std::io::Result<EventFile>) -> Self {
        Self(
            file.map_err(|e| {
                eprintln!(
                    "warning: no TensorBoard event file in {} ({e}); going on without it",
                    dir.display()
                )
            })
            .ok(),
        )
    }

    /// Writes `scalars`; after a failed write, says so once and writes nothing more.
    pub fn write(&mut self, scalars: &[Scalar]) {
        if let Some(file) = &mut self.0
            && let Err(e) = file.write(scalars)
        {
            eprintln!(
                "warning: writing {} failed ({e}); no more TensorBoard scalars from this process",
                file.path().display()
            );
            self.0 = None;
        }
    }
}

/// The step of one `scalars.jsonl` line.
fn step_of(line: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["step"].as_i64())
}

/// Seconds since the Unix epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
