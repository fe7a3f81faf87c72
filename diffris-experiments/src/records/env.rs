//! How a run was trained, beyond its config (`env.json`): the build, backend, device, CPU and
//! the split of each batch into passes, written before the run starts.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{RunDir, RunSpec};
use crate::device::backend::RunTarget;
use crate::records::outcome::write_json;
use crate::util::build_info::{BURN_VERSION, CRATE_VERSION, GIT_REVISION};

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

    /// How a run of `spec` trains on `target` with this build: the samples of each pass of a
    /// full batch over the devices ([`crate::training::loader::micro_batches`]) and, on several
    /// devices, how they share it.
    pub fn planned(spec: &RunSpec, target: &RunTarget) -> Self {
        let devices = target.devices.len().max(1);
        let t = &spec.train;
        let passes = crate::training::loader::micro_batches(
            t.batch_size,
            t.batch_size,
            t.pass_size(),
            devices,
        )
        .into_iter()
        .map(|(range, _)| range.len())
        .collect();
        Self::here(passes, (devices > 1).then(|| target.parallel.to_string()))
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

impl RunDir {
    /// What drew a run's random SD weights, as its `env.json` records it (`None` for runs from
    /// before it was recorded, whose weights carry the older cache name).
    pub fn read_weights_generator(&self) -> anyhow::Result<Option<String>> {
        let path = self.env();
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

    /// How the run was trained, from its `env.json` (`None` when it has none or it cannot be
    /// read).
    pub fn trained_as(&self) -> Option<TrainedAs> {
        let text = std::fs::read_to_string(self.env()).ok()?;
        let env: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(TrainedAs {
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

    /// When a finished run in `dir` was trained by another build than this one (its `env.json`
    /// names another git revision) or with another pass split than this command's (`now`), a line
    /// saying so, for the reuse message: either can change a run's numbers, and reuse looks only at
    /// the resolved config.
    pub fn reuse_note(&self, variant: &str, now: &TrainedAs) -> Option<String> {
        let then = self.trained_as()?;
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

    /// The generator of the random weights the run reads
    /// ([`crate::inputs::frozen::random_sd_dir`]): the one it recorded when it resumes (a folder
    /// with training state, without `--restart`), so that it continues with the weights it
    /// started with (`None`: a run from before they were recorded, whose weights carry the older
    /// folder name); this backend's for a run that starts.
    pub fn weights_generator_for(
        &self,
        restart: bool,
        target: &RunTarget,
    ) -> anyhow::Result<Option<String>> {
        if self.exists() && !restart && !self.never_trained() {
            self.read_weights_generator()
        } else {
            Ok(Some(target.weights_generator.clone()))
        }
    }

    /// Writes `env.json`.
    pub fn write_env(&self, env: &EnvRecord) -> anyhow::Result<()> {
        write_json(&self.env(), env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_generator_is_read_from_env_json_when_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::at(tmp.path());
        assert_eq!(dir.read_weights_generator().unwrap(), None, "no env.json");
        let env = dir.env();
        std::fs::write(&env, r#"{"seed": 0, "backend": "flex"}"#).unwrap();
        assert_eq!(
            dir.read_weights_generator().unwrap(),
            None,
            "a run from before the field"
        );
        std::fs::write(&env, r#"{"seed": 0, "weights_generator": "flex-Cpu-v1"}"#).unwrap();
        assert_eq!(
            dir.read_weights_generator().unwrap().as_deref(),
            Some("flex-Cpu-v1")
        );
        std::fs::write(&env, "{\"seed\": 0,").unwrap();
        let err = format!("{:#}", dir.read_weights_generator().unwrap_err());
        assert!(err.contains("env.json"), "names the file: {err}");
    }

    #[test]
    fn a_run_of_another_revision_or_pass_split_is_named_on_reuse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::at(tmp.path());
        let now = TrainedAs::here(vec![8], None);
        assert_eq!(
            dir.reuse_note("full", &now),
            None,
            "no env.json: nothing to say"
        );
        let write = |env: serde_json::Value| {
            std::fs::write(dir.env(), env.to_string()).unwrap();
        };
        write(serde_json::json!({ "git_revision": GIT_REVISION, "seed": 0 }));
        assert_eq!(
            dir.reuse_note("full", &now),
            None,
            "same build, split not recorded"
        );
        write(serde_json::json!({ "git_revision": "0123abc", "seed": 0 }));
        let note = dir.reuse_note("full", &now).expect("another revision");
        assert!(
            note.contains("revision 0123abc") && note.contains(GIT_REVISION),
            "{note}"
        );
        assert!(note.contains("--restart"), "{note}");
        // Two devices, one pass of 4 each: another split than one pass of 8.
        write(serde_json::json!({
            "git_revision": GIT_REVISION, "passes": [4, 4], "data_parallel": "ordered"
        }));
        let note = dir.reuse_note("full", &now).expect("another split");
        assert!(
            note.contains("passes [4, 4] (ordered) (this command: passes [8])"),
            "{note}"
        );
        assert!(!note.contains("revision"), "{note}");
        let same = TrainedAs::here(vec![4, 4], Some("ordered".into()));
        assert_eq!(dir.reuse_note("full", &same), None);
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
