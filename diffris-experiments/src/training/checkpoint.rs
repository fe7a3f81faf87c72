//! Checkpoints that a resume can always use: written atomically, kept and deleted by diffris's
//! own epoch record, and a resume from the newest epoch whose files are whole.
//!
//! burn-train 0.21's `MetricCheckpointingStrategy` picks the best epoch from burn-train's own
//! metric logs, which hold no entry for the first epoch after a resume; reading them it stopped
//! at the gap, took an earlier epoch for the best and, with "keep the last one", deleted the
//! checkpoint of the real best epoch (which diffris then failed to load). [`BestAndLast`] decides
//! from the [`EpochLog`] instead, the record diffris also selects the final model from, so the
//! two cannot disagree. Its `FileCheckpointer` writes through [`AtomicRecorder`]: a file under
//! its final name is always complete.

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::record::{FileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use burn::train::Interrupter;
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::epoch_log::{EpochLog, best_epoch};
use crate::config::RunDir;
use crate::config::recipe::SelectBy;

/// The record files of one epoch's checkpoint (burn-train's names).
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// Burn's named MessagePack format (what `DefaultRecorder` writes, so older checkpoints load),
/// written to `NAME.mpk.partial`, synced and renamed to `NAME.mpk`.
/// The first failed write's message is kept ([`AtomicRecorder::failure`]): burn-train passes it
/// on only inside its own error's debug form.
#[derive(Clone, Debug, Default)]
pub struct AtomicRecorder {
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl AtomicRecorder {
    /// The message of the first write that failed, if any did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension("mpk");
        let partial = file.with_extension("mpk.partial");
        let io = |e: std::io::Error, what: &str| {
            RecorderError::Unknown(format!("{what} {}: {e}", partial.display()))
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(e, "creating the folder of"))?;
        }
        let written = (|| {
            let out = std::fs::File::create(&partial).map_err(|e| io(e, "creating"))?;
            let mut writer = KeepsError {
                inner: BufWriter::new(out),
                error: None,
                hash: crate::util::cache::Fnv1a::new(),
            };
            rmp_serde::encode::write_named(&mut writer, &item).map_err(|e| {
                // rmp_serde's message leaves out the I/O error ("No space left on device").
                let cause = writer.error.take().unwrap_or_else(|| e.to_string());
                RecorderError::Unknown(format!("writing {}: {cause}", partial.display()))
            })?;
            let digest = crate::util::cache::digest_text(writer.hash.finish());
            let out = writer
                .inner
                .into_inner()
                .map_err(|e| io(e.into_error(), "writing"))?;
            out.sync_all().map_err(|e| io(e, "syncing"))?;
            std::fs::rename(&partial, &file).map_err(|e| io(e, "renaming"))?;
            // The digest beside it, written after the file is whole: a file whose bytes later
            // differ from it (damaged in place, even at the same size) is not resumed from.
            crate::util::atomic_file::write_atomic(
                &digest_path(&file),
                format!("{digest}\n").as_bytes(),
            )
            .map_err(|e| RecorderError::Unknown(format!("{e:#}")))
        })();
        if let Err(e) = &written {
            let message = match e {
                RecorderError::Unknown(m) => m.clone(),
                other => other.to_string(),
            };
            self.failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(message);
            // Give the space back (a full disk is the usual cause); the final name was never
            // written.
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        file.set_extension("mpk");
        if file.exists() && !matches_digest(file) {
            return Err(RecorderError::Unknown(format!(
                "{} differs from the digest written beside it ({}): the checkpoint was damaged \
                 after it was written",
                file.display(),
                digest_path(file).display()
            )));
        }
        let f = std::fs::File::open(&*file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RecorderError::FileNotFound(file.display().to_string()),
            _ => RecorderError::Unknown(format!("{}: {e}", file.display())),
        })?;
        rmp_serde::decode::from_read(BufReader::new(f))
            .map_err(|e| RecorderError::Unknown(format!("{}: {e}", file.display())))
    }
}

/// A writer that keeps the message of the first I/O error it passed on, and the FNV-1a digest
/// of the bytes it wrote.
struct KeepsError<W> {
    inner: W,
    error: Option<String>,
    hash: crate::util::cache::Fnv1a,
}

impl<W: Write> Write for KeepsError<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf);
        match &written {
            Ok(n) => self.hash.update(&buf[..*n]),
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
            }
        }
        written
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.inner.flush();
        if let Err(e) = &flushed {
            self.error.get_or_insert_with(|| e.to_string());
        }
        flushed
    }
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// Where the digest of a record file is kept: `NAME.mpk.digest`.
fn digest_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".digest");
    PathBuf::from(name)
}

/// Whether `file`'s bytes match the digest written beside it (a file without one, written by an
/// older version, counts as matching: only [`decodes`] can judge it).
fn matches_digest(file: &Path) -> bool {
    let Ok(recorded) = std::fs::read_to_string(digest_path(file)) else {
        return true;
    };
    crate::util::cache::file_digest(file).is_ok_and(|now| now == recorded.trim())
}

/// Whether `path` holds one whole MessagePack value (a truncated or garbled file does not) whose
/// bytes are the ones written (see [`matches_digest`]).
fn decodes(path: &Path) -> bool {
    if !matches_digest(path) {
        return false;
    }
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut reader = BufReader::new(f);
    let whole = rmp_serde::decode::from_read::<_, serde::de::IgnoredAny>(&mut reader).is_ok();
    // Nothing may follow the value.
    whole && std::io::Read::read(&mut reader, &mut [0u8; 1]).is_ok_and(|n| n == 0)
}

/// The epochs with a file of any part in a run's checkpoint folder.
fn epochs_on_disk(dir: &RunDir) -> BTreeSet<usize> {
    let Ok(entries) = std::fs::read_dir(dir.checkpoints()) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".mpk")?;
            let (part, epoch) = stem.rsplit_once('-')?;
            PARTS.contains(&part).then_some(())?;
            epoch.parse().ok()
        })
        .collect()
}

/// The newest epoch of a run's checkpoint folder whose three record files are all whole, if any.
pub fn last_checkpoint(dir: &RunDir) -> Option<usize> {
    let checkpoint = dir.checkpoints();
    epochs_on_disk(dir).into_iter().rev().find(|epoch| {
        PARTS
            .iter()
            .all(|part| decodes(&checkpoint.join(format!("{part}-{epoch}.mpk"))))
    })
}

/// Keeps the checkpoint of the newest epoch (for resume) and of the best one by the epoch log
/// (for the final model); deletes every other.
pub struct BestAndLast {
    log: EpochLog,
    select_by: SelectBy,
    /// Validation samples per epoch: an epoch's record is complete when it has them all.
    val_samples: u64,
    /// Epochs with a checkpoint on disk.
    kept: BTreeSet<usize>,
    /// Set when the run is being stopped: its validation may end early and the run fails, so
    /// nothing is waited for.
    stop: Option<Interrupter>,
}

impl BestAndLast {
    /// For a run in `dir` (whose existing checkpoints it takes over) validated on `val_samples`
    /// samples per epoch.
    pub fn new(dir: &RunDir, log: EpochLog, select_by: SelectBy, val_samples: usize) -> Self {
        Self {
            log,
            select_by,
            val_samples: val_samples as u64,
            kept: epochs_on_disk(dir),
            stop: None,
        }
    }

    /// Waits for nothing once `stop` is set.
    pub fn unless_stopped(mut self, stop: Interrupter) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Waits for burn-train's metrics thread to record every validation sample of `epoch` (it
    /// runs behind the training loop by a few items).
    fn wait_for(&self, epoch: usize) {
        let started = Instant::now();
        let complete = || {
            self.log
                .split("valid")
                .get(&epoch)
                .is_some_and(|s| s.samples() >= self.val_samples)
        };
        while !complete() {
            if self.stop.as_ref().is_some_and(Interrupter::should_stop) {
                return;
            }
            if started.elapsed() > Duration::from_secs(600) {
                eprintln!(
                    "warning: the validation record of epoch {epoch} is still incomplete after \
                     10 minutes; choosing the checkpoints to keep from what it holds"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The actions for the checkpoint of `epoch`: save it, delete what is neither it nor the
    /// best epoch.
    pub fn actions(&mut self, epoch: usize) -> Vec<CheckpointingAction> {
        self.wait_for(epoch);
        let best = best_epoch(&self.log.split("valid"), self.select_by);
        let mut actions = vec![CheckpointingAction::Save];
        let stale: Vec<usize> = self
            .kept
            .iter()
            .copied()
            .filter(|&e| e != epoch && Some(e) != best)
            .collect();
        for e in stale {
            actions.push(CheckpointingAction::Delete(e));
            self.kept.remove(&e);
        }
        self.kept.insert(epoch);
        actions
    }
}

impl CheckpointingStrategy for BestAndLast {
    fn checkpointing(
        &mut self,
        epoch: usize,
        _store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        self.actions(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::step::SegStats;

    /// A log whose epoch `e` validated one sample with IoU `ious[e - 1]` (intersection over a
    /// union of 100 pixels).
    fn log(ious: &[u64]) -> EpochLog {
        let log = EpochLog::default();
        for (i, &iou) in ious.iter().enumerate() {
            log.record(
                "valid",
                i + 1,
                &SegStats {
                    loss: 0.0,
                    intersection: vec![iou as f64],
                    union: vec![100.0],
                },
            );
        }
        log
    }

    fn deleted(actions: &[CheckpointingAction]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                CheckpointingAction::Delete(e) => Some(*e),
                CheckpointingAction::Save => None,
            })
            .collect()
    }

    /// The best epoch in the middle survives every later epoch, and a resumed strategy (which
    /// finds the files on disk) keeps it too: the case burn-train's strategy got wrong.
    #[test]
    fn the_best_epoch_in_the_middle_is_kept_through_later_epochs_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let ious = [30, 60, 40, 50];
        let mut s = BestAndLast::new(&RunDir::at(dir.path()), log(&ious[..1]), SelectBy::Miou, 1);
        assert!(deleted(&s.actions(1)).is_empty());
        s.log = log(&ious[..2]);
        assert_eq!(deleted(&s.actions(2)), [1], "2 is best and last");
        s.log = log(&ious[..3]);
        assert!(
            deleted(&s.actions(3)).is_empty(),
            "keeps 2 (best) and 3 (last)"
        );

        // A resume after epoch 3 finds checkpoints 2 and 3 on disk.
        let checkpoint = RunDir::at(dir.path()).checkpoints();
        std::fs::create_dir_all(&checkpoint).unwrap();
        for e in [2, 3] {
            for part in PARTS {
                std::fs::write(checkpoint.join(format!("{part}-{e}.mpk")), [0xc0]).unwrap();
            }
        }
        let mut resumed = BestAndLast::new(&RunDir::at(dir.path()), log(&ious), SelectBy::Miou, 1);
        assert_eq!(deleted(&resumed.actions(4)), [3], "2 stays the best");
    }

    /// Only whole files count: a truncated or missing part makes the resume use the epoch before.
    #[cfg(feature = "flex")] // a recorder is called for a backend type
    #[test]
    fn a_resume_starts_from_the_newest_whole_checkpoint() {
        #[derive(Serialize)]
        struct Item {
            weights: Vec<f32>,
            name: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let recorder = AtomicRecorder::default();
        let checkpoint = RunDir::at(dir.path()).checkpoints();
        for e in [1, 2, 3] {
            for part in PARTS {
                let item = Item {
                    weights: vec![0.5; 64],
                    name: format!("{part}-{e}"),
                };
                Recorder::<burn::backend::Flex>::save_item(
                    &recorder,
                    item,
                    checkpoint.join(format!("{part}-{e}")),
                )
                .unwrap();
            }
        }
        assert_eq!(last_checkpoint(&RunDir::at(dir.path())), Some(3));
        assert!(
            !checkpoint.join("model-3.mpk.partial").exists(),
            "renamed into place"
        );
        // Epoch 3's optimizer file cut short (a write killed half-way by an older version).
        let optim = checkpoint.join("optim-3.mpk");
        let bytes = std::fs::read(&optim).unwrap();
        std::fs::write(&optim, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(last_checkpoint(&RunDir::at(dir.path())), Some(2));
        // Epoch 2 without its scheduler file.
        std::fs::remove_file(checkpoint.join("scheduler-2.mpk")).unwrap();
        assert_eq!(last_checkpoint(&RunDir::at(dir.path())), Some(1));
        // Epoch 1's model damaged in place (one bit, same size, still a MessagePack value):
        // its digest no longer matches, so it is not resumed from, and loading it names it.
        let model = checkpoint.join("model-1.mpk");
        let original = std::fs::read(&model).unwrap();
        let mut flipped = original.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        std::fs::write(&model, &flipped).unwrap();
        assert_eq!(last_checkpoint(&RunDir::at(dir.path())), None);
        let err = Recorder::<burn::backend::Flex>::load_item::<serde::de::IgnoredAny>(
            &recorder,
            &mut model.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model-1.mpk differs from the digest"), "{err}");
        std::fs::write(&model, &original).unwrap();
        std::fs::remove_file(digest_path(&model)).unwrap();
        assert_eq!(
            last_checkpoint(&RunDir::at(dir.path())),
            Some(1),
            "a file without a digest (an older version's) is judged by decoding"
        );
        // Trailing bytes after a whole value are not a whole file either.
        let mut bytes = std::fs::read(&model).unwrap();
        bytes.push(0);
        std::fs::write(&model, bytes).unwrap();
        assert_eq!(last_checkpoint(&RunDir::at(dir.path())), None);
    }
}
