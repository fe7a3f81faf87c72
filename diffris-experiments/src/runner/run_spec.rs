//! One resolved run spec trained and evaluated in a process of its own (`diffris run-spec`): the
//! ablation driver starts one such process per run when it runs several at once
//! ([`super::parallel`]); each process owns its backend RNG, so a run computes the same thing
//! whether it ran alone, in sequence or beside others.

use std::path::PathBuf;

use indicatif::{MultiProgress, ProgressDrawTarget};

use super::prepare::Shared;
use super::run::run_one;
use super::workspace::Workspace;
use crate::config::run_spec::RunSpec;
use crate::device::backend::{BackendJob, DeviceBackend, DeviceList, RunTarget, dispatch_on};
use crate::records::Outcome;

/// How the parent asks for the run (its `Workspace`, as flags).
#[derive(Debug, Clone)]
pub struct Request {
    pub results: PathBuf,
    pub cache: PathBuf,
    pub threads: usize,
    pub resume: bool,
    pub restart: bool,
    pub stop_after: Option<usize>,
    /// Seconds between progress lines.
    pub log_every: f64,
    /// The memory this run may use of its device, in GiB (its share, from the parent).
    pub memory_gib: Option<f64>,
}

/// Trains and evaluates `spec` on `devices`, after arranging to end with the parent process.
/// `None`: it stopped early (`stop_after`) and can resume.
pub fn run(
    devices: &DeviceList,
    request: Request,
    spec: RunSpec,
) -> anyhow::Result<Option<Outcome>> {
    exit_with_parent();
    dispatch_on(devices, Job(request, spec))?
}

struct Job(Request, RunSpec);

impl BackendJob for Job {
    type Output = anyhow::Result<Option<Outcome>>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> Self::Output {
        let (a, spec) = (self.0, self.1);
        let ws = Workspace {
            results: a.results,
            cache: a.cache,
            threads: a.threads.max(1),
            resume: a.resume,
            restart: a.restart,
            stop_after: a.stop_after,
            progress: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            log_every: std::time::Duration::from_secs_f64(a.log_every.max(0.0)),
            budget: crate::plan::Budget::shared(
                a.memory_gib.map(|gib| crate::device::usage::Capacity {
                    bytes: gib * crate::device::usage::GIB,
                    what: "this run's share of the device's memory".into(),
                }),
                1,
                target.spec,
            ),
        };
        let mut shared = Shared::<B>::default();
        run_one::<B>(&spec, &ws, &mut shared, &device, &target)
    }
}

/// Ends this process when the process that started it is gone (killed with `kill -9`, say):
/// an orphaned run would go on training into a results folder nobody reads, and hold the
/// machine while the user relaunches. Its checkpoints are written atomically, so `--resume`
/// continues from the last whole one.
fn exit_with_parent() {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if std::os::unix::process::parent_id() != parent {
                    eprintln!("diffris run-spec: the ablation process {parent} is gone; stopping");
                    std::process::exit(1);
                }
            }
        });
    }
}
