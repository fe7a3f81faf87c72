//! What a run leaves on disk: its directory, the resolved config (`config.ron`) and environment
//! record (`env.json`) written before it starts, and its result (`result.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::device::backend::RunTarget;
use crate::eval::evaluate::Baselines;
use crate::eval::metrics::Metrics;
use crate::spec::profile::RunSpec;
use crate::spec::recipe::check_dir_name;
use crate::training::divergence::Divergence;
use crate::util::atomic_file::write_atomic;
use crate::util::build_info::{BURN_VERSION, CRATE_VERSION, GIT_REVISION};
use crate::util::cache::file_digest;

/// What a finished run reports (`result.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub ablation: String,
    pub variant: String,
    pub label: String,
    pub seed: u64,
    pub best_epoch: usize,
    /// The selected model on the validation split.
    pub val: Metrics,
    pub test: Metrics,
    pub baselines: Baselines,
    pub train_seconds: f64,
    pub protocol: String,
    /// Digests of the files the run's results rest on ([`SEALED`]), taken when it finished
    /// (absent in runs from before they were recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// The files of a finished run that its results rest on: whatever later reads the run
/// (`eval`, `figures`, `segment`, `explain`) checks them against the digests in `result.json`.
pub const SEALED: [&str; 2] = ["config.ron", "model.safetensors"];

/// The digests of a run folder's [`SEALED`] files.
pub fn seal(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    SEALED
        .iter()
        .map(|f| Ok((f.to_string(), file_digest(&dir.join(f))?)))
        .collect()
}

/// Checks a run folder's files against the digests its `result.json` recorded.
pub fn check_seal(dir: &Path, recorded: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for (file, digest) in recorded {
        let path = dir.join(file);
        let now = file_digest(&path)?;
        anyhow::ensure!(
            &now == digest,
            "{} changed after the run finished (its result.json recorded {digest}, the file is \
             now {now}): the results no longer describe it; restore it, or train the run again \
             with --restart",
            path.display()
        );
    }
    Ok(())
}

/// What `result.json` holds for a run whose loss stopped being finite: where, and no metrics
/// (its training ended without a model to select). Reruns with the same config reuse this
/// record (the same seed diverges at the same pass); `--restart` trains it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergedRun {
    pub ablation: String,
    pub variant: String,
    pub label: String,
    pub seed: u64,
    pub diverged: Divergence,
    pub train_seconds: f64,
}

/// How a run ended, as its `result.json` says.
// One per run of a command: not worth a box for the size difference.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Finished(RunResult),
    Diverged(DivergedRun),
}

impl Outcome {
    /// The metrics of a finished run.
    pub fn finished(&self) -> Option<&RunResult> {
        match self {
            Self::Finished(r) => Some(r),
            Self::Diverged(_) => None,
        }
    }

    /// Writes `dir/result.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("result.json");
        match self {
            Self::Finished(r) => write_json(&path, r),
            Self::Diverged(d) => write_json(&path, d),
        }
    }
}

/// The one-line summary of a run's outcome (`None`: stopped early by `--stop-after`).
pub fn outcome_line(variant: &str, r: Option<&Outcome>) -> String {
    match r {
        Some(Outcome::Diverged(d)) => format!(
            "{:>24}  seed {}  diverged: {}",
            d.variant, d.seed, d.diverged
        ),
        Some(Outcome::Finished(r)) => format!(
            "{:>24}  seed {}  best epoch {}  test mIoU {:.2}  oIoU {:.2}  ({:.0} s training)",
            r.variant, r.seed, r.best_epoch, r.test.miou, r.test.oiou, r.train_seconds
        ),
        None => format!("{variant:>24}  stopped early (resumable)"),
    }
}

/// The environment record of a run (`env.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvRecord {
    pub diffris_version: String,
    pub git_revision: String,
    pub burn_version: String,
    pub backend: String,
    pub device: String,
    /// How several devices shared each batch (`ordered` or `ddp`; `None` on one device).
    #[serde(default)]
    pub data_parallel: Option<String>,
    /// The CPU model and the vector extensions the CPU kernels may use: runs on CPUs that
    /// differ here use different floating-point kernels and differ in their last digits.
    pub cpu: CpuRecord,
    /// What drew the run's random SD weights, which it reads back from the cache
    /// ([`crate::inputs::frozen::random_sd_dir`]); absent in runs from before it was recorded.
    #[serde(default)]
    pub weights_generator: Option<String>,
    /// Samples of each pass of a full optimizer batch, in order over the devices (`[8]`: one
    /// pass of 8; `[4, 4]`: two, on one device with micro-batches of 4 or on two devices): with
    /// `data_parallel`, what decides how a batch's gradient is summed, so runs that differ here
    /// differ in their numbers. Absent in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<Vec<usize>>,
    pub seed: u64,
    pub started_unix: u64,
    pub command: Vec<String>,
}

/// How a run was trained, beyond its config: the build and the way each batch was split into
/// passes (see [`EnvRecord::passes`]). Runs that differ here may differ in their numbers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrainedAs {
    pub revision: String,
    /// `None` for runs from before the split was recorded.
    pub passes: Option<Vec<usize>>,
    pub data_parallel: Option<String>,
}

impl TrainedAs {
    /// What a run of `passes` on this build trains as.
    pub fn here(passes: Vec<usize>, data_parallel: Option<String>) -> Self {
        Self {
            revision: GIT_REVISION.into(),
            passes: Some(passes),
            data_parallel,
        }
    }

    /// Read from a run's `env.json` (`None` when it has none or it cannot be read).
    pub fn of(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("env.json")).ok()?;
        let env: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(Self {
            revision: env.get("git_revision")?.as_str()?.to_string(),
            passes: env
                .get("passes")
                .and_then(|p| serde_json::from_value(p.clone()).ok()),
            data_parallel: env
                .get("data_parallel")
                .and_then(|d| d.as_str())
                .map(String::from),
        })
    }

    /// The pass split in words: `passes [4, 4] (ordered)`.
    pub fn split(&self) -> String {
        match &self.passes {
            None => "passes not recorded".into(),
            Some(p) => format!(
                "passes {p:?}{}",
                self.data_parallel
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Whether the pass splits are known to differ (a record without one differs from none).
    pub fn split_differs(&self, other: &Self) -> bool {
        self.passes.is_some()
            && other.passes.is_some()
            && (&self.passes, &self.data_parallel) != (&other.passes, &other.data_parallel)
    }
}

/// The CPU a run computed on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuRecord {
    pub arch: String,
    /// The model name the OS reports (empty where it reports none).
    pub model: String,
    pub cores: usize,
    /// The SIMD extensions detected at run time, of those that select kernels.
    pub features: Vec<String>,
}

impl CpuRecord {
    /// The CPU of this process.
    pub fn detect() -> Self {
        Self {
            arch: std::env::consts::ARCH.into(),
            model: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            features: simd_features(),
        }
    }
}

/// The `model name` line of `/proc/cpuinfo` (Linux); empty elsewhere.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($f) {
                out.push($f.to_string());
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16"
    );
    out
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($f) {
                out.push($f.to_string());
            }
        )*};
    }
    probe!("neon", "fp16", "dotprod", "bf16", "i8mm", "sve", "sve2");
    out
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<String> {
    Vec::new()
}

impl EnvRecord {
    /// The record of a run starting now on `target`.
    pub fn now(target: &RunTarget, seed: u64) -> Self {
        Self {
            diffris_version: CRATE_VERSION.into(),
            git_revision: GIT_REVISION.into(),
            burn_version: BURN_VERSION.into(),
            backend: target.backend_name.clone(),
            device: format!(
                "{} ({})",
                crate::device::backend::DeviceList::from_specs(&target.devices),
                target.device_debug
            ),
            data_parallel: (target.devices.len() > 1).then(|| target.parallel.to_string()),
            cpu: CpuRecord::detect(),
            weights_generator: Some(target.weights_generator.clone()),
            passes: None,
            seed,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            command: std::env::args().collect(),
        }
    }
}

/// The directory of a run (`ablation` and `variant` checked by [`check_dir_name`] where they
/// were read).
pub fn run_dir(results: &Path, ablation: &str, variant: &str, seed: u64) -> PathBuf {
    debug_assert!(
        check_dir_name("ablation", ablation).is_ok() && check_dir_name("variant", variant).is_ok(),
        "unchecked names {ablation:?} / {variant:?}"
    );
    results
        .join("runs")
        .join(ablation)
        .join(variant)
        .join(format!("seed-{seed}"))
}

/// The directory of the run `spec` describes.
pub fn spec_dir(results: &Path, spec: &RunSpec) -> PathBuf {
    run_dir(results, &spec.ablation, &spec.variant, spec.seed)
}

/// The log file of a run trained in its own process.
pub fn log_path(results: &Path, spec: &RunSpec) -> PathBuf {
    spec_dir(results, spec).with_extension("log")
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Serialises a run spec the way `config.ron` stores it.
pub fn spec_ron(spec: &RunSpec) -> anyhow::Result<String> {
    Ok(ron::ser::to_string_pretty(
        spec,
        ron::ser::PrettyConfig::default(),
    )?)
}

/// Reads a saved run spec (`config.ron`, or one sent to a `run-spec` process).
pub fn parse_spec(text: &str, origin: &Path) -> anyhow::Result<RunSpec> {
    let spec: RunSpec =
        ron::from_str(text).map_err(|e| crate::spec::recipe::ron_error(origin, e))?;
    check_dir_name("ablation", &spec.ablation)
        .and_then(|()| check_dir_name("variant", &spec.variant))
        .map_err(|e| anyhow::anyhow!("{}: {e}", origin.display()))?;
    Ok(spec)
}

/// Reads `dir/config.ron`.
pub fn read_spec(dir: &Path) -> anyhow::Result<RunSpec> {
    let path = dir.join("config.ron");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_spec(&text, &path)
}

/// What drew a run's random SD weights, as its `env.json` records it (`None` for runs from
/// before it was recorded, whose weights carry the older cache name).
pub fn read_weights_generator(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join("env.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok(value
        .get("weights_generator")
        .and_then(|g| g.as_str())
        .map(str::to_string))
}

/// Reads `dir/result.json`: a finished run's metrics, or where a diverged run stopped.
pub fn read_result(dir: &Path) -> anyhow::Result<Outcome> {
    let path = dir.join("result.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let outcome = if value.get("diverged").is_some() {
        serde_json::from_value(value).map(Outcome::Diverged)
    } else {
        serde_json::from_value(value).map(Outcome::Finished)
    };
    outcome.with_context(|| format!("reading {}", path.display()))
}

/// Loads a run's outcome, if the run directory holds one for exactly this spec.
pub fn finished(dir: &Path, spec: &RunSpec) -> anyhow::Result<Option<Outcome>> {
    if !dir.join("result.json").is_file() {
        return Ok(None);
    }
    let saved = std::fs::read_to_string(dir.join("config.ron")).unwrap_or_default();
    if saved != spec_ron(spec)? {
        return Ok(None);
    }
    read_result(dir).map(Some)
}

/// When a finished run in `dir` was trained by another build than this one (its `env.json`
/// names another git revision) or with another pass split than this command's (`now`), a line
/// saying so, for the reuse message: either can change a run's numbers, and reuse looks only at
/// the resolved config.
pub fn reuse_note(dir: &Path, variant: &str, now: &TrainedAs) -> Option<String> {
    let then = TrainedAs::of(dir)?;
    let mut what = Vec::new();
    if then.revision != now.revision {
        what.push(format!(
            "revision {} (this build: {})",
            then.revision, now.revision
        ));
    }
    if then.split_differs(now) {
        what.push(format!("{} (this command: {})", then.split(), now.split()));
    }
    (!what.is_empty()).then(|| {
        format!(
            "{variant:>24}  reused, trained with {}; --restart trains it again",
            what.join(" and ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name a shipped ablation uses passes; nothing that could leave the folder does.
    #[test]
    fn directory_names_cannot_leave_their_folder() {
        for ok in ["cp_adapter", "lr_1e-4", "sd1.5", "a", &"x".repeat(100)] {
            check_dir_name("variant", ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            "a\\b",
            ".hidden",
            "C:",
            "a b",
            "é",
            &"x".repeat(101),
        ] {
            let err = check_dir_name("variant", bad).unwrap_err().to_string();
            assert!(err.contains(&format!("variant `{bad}` must be")), "{err}");
        }
        let spec = RunSpec {
            variant: "../../x".into(),
            ..RunSpec::example()
        };
        let err = parse_spec(&spec_ron(&spec).unwrap(), Path::new("config.ron"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config.ron: variant `../../x` must be"),
            "{err}"
        );
    }

    #[test]
    fn the_weights_generator_is_read_from_env_json_when_recorded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_weights_generator(dir.path()).unwrap(),
            None,
            "no env.json"
        );
        let env = dir.path().join("env.json");
        std::fs::write(&env, r#"{"seed": 0, "backend": "flex"}"#).unwrap();
        assert_eq!(
            read_weights_generator(dir.path()).unwrap(),
            None,
            "a run from before the field"
        );
        std::fs::write(&env, r#"{"seed": 0, "weights_generator": "flex-Cpu-v1"}"#).unwrap();
        assert_eq!(
            read_weights_generator(dir.path()).unwrap().as_deref(),
            Some("flex-Cpu-v1")
        );
        std::fs::write(&env, "{\"seed\": 0,").unwrap();
        let err = format!("{:#}", read_weights_generator(dir.path()).unwrap_err());
        assert!(err.contains("env.json"), "names the file: {err}");
    }

    #[test]
    fn a_run_of_another_revision_or_pass_split_is_named_on_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let now = TrainedAs::here(vec![8], None);
        assert_eq!(
            reuse_note(dir.path(), "full", &now),
            None,
            "no env.json: nothing to say"
        );
        let write = |env: serde_json::Value| {
            std::fs::write(dir.path().join("env.json"), env.to_string()).unwrap();
        };
        write(serde_json::json!({ "git_revision": GIT_REVISION, "seed": 0 }));
        assert_eq!(
            reuse_note(dir.path(), "full", &now),
            None,
            "same build, split not recorded"
        );
        write(serde_json::json!({ "git_revision": "0123abc", "seed": 0 }));
        let note = reuse_note(dir.path(), "full", &now).expect("another revision");
        assert!(
            note.contains("revision 0123abc") && note.contains(GIT_REVISION),
            "{note}"
        );
        assert!(note.contains("--restart"), "{note}");
        // Two devices, one pass of 4 each: another split than one pass of 8.
        write(serde_json::json!({
            "git_revision": GIT_REVISION, "passes": [4, 4], "data_parallel": "ordered"
        }));
        let note = reuse_note(dir.path(), "full", &now).expect("another split");
        assert!(
            note.contains("passes [4, 4] (ordered) (this command: passes [8])"),
            "{note}"
        );
        assert!(!note.contains("revision"), "{note}");
        let same = TrainedAs::here(vec![4, 4], Some("ordered".into()));
        assert_eq!(reuse_note(dir.path(), "full", &same), None);
    }

    #[test]
    fn a_diverged_outcome_reads_back_and_a_bad_result_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = Outcome::Diverged(DivergedRun {
            ablation: "a".into(),
            variant: "v".into(),
            label: "V".into(),
            seed: 3,
            diverged: Divergence {
                split: "train".into(),
                epoch: 2,
                pass: 5,
                loss: "inf".into(),
            },
            train_seconds: 1.5,
        });
        outcome.save(dir.path()).unwrap();
        assert_eq!(read_result(dir.path()).unwrap(), outcome);
        assert!(outcome.finished().is_none());
        // Neither shape: the error names the file and what is missing.
        std::fs::write(dir.path().join("result.json"), r#"{"ablation": "a"}"#).unwrap();
        let err = format!("{:#}", read_result(dir.path()).unwrap_err());
        assert!(
            err.contains("result.json") && err.contains("missing field"),
            "{err}"
        );
    }

    #[test]
    fn the_cpu_record_names_this_machine() {
        let cpu = CpuRecord::detect();
        assert_eq!(cpu.arch, std::env::consts::ARCH);
        assert!(cpu.cores >= 1);
        #[cfg(target_arch = "x86_64")]
        assert!(
            cpu.features.iter().any(|f| f == "sse4.2")
                == std::arch::is_x86_feature_detected!("sse4.2")
        );
    }
}
