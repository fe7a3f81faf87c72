//! `diffris run-spec` (hidden): trains and evaluates one resolved run spec read from stdin. The
//! `ablation` command starts one such process per run when it runs several at once
//! ([`crate::runner::parallel`]); each process owns its backend RNG, so a run computes the same thing
//! whether it ran alone, in sequence or beside others.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressDrawTarget};

use crate::config::run_spec::RunSpec;
use crate::device::backend::{BackendJob, DeviceBackend, DeviceList, RunTarget, dispatch_on};
use crate::records::Outcome;
use crate::runner::prepare::Shared;
use crate::runner::run::run_one;
use crate::runner::workspace::Workspace;

/// Arguments of `diffris run-spec`; the run spec (RON, as in a run's `config.ron`) comes on
/// stdin.
#[derive(Debug, Clone, clap::Args)]
pub struct RunSpecArgs {
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long)]
    pub cache: PathBuf,
    #[arg(long)]
    pub threads: usize,
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub restart: bool,
    #[arg(long)]
    pub stop_after: Option<usize>,
    #[arg(long, default_value_t = 60.0,
          value_parser = super::bounds::within(super::bounds::LOG_EVERY.0, super::bounds::LOG_EVERY.1))]
    pub log_every: f64,
    /// The memory this run may use of its device, in GiB (its share, from the parent).
    #[arg(long)]
    pub memory_gib: Option<f64>,
}

struct RunSpecJob(RunSpecArgs, RunSpec);

impl BackendJob for RunSpecJob {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
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
        match run_one::<B>(&spec, &ws, &mut shared, &device, &target)? {
            // A divergence is an outcome (in result.json) the parent reads and reports.
            Some(Outcome::Diverged(d)) => println!(
                "{}/{} seed {}: diverged: {}",
                d.ablation, d.variant, d.seed, d.diverged
            ),
            Some(Outcome::Finished(r)) => println!(
                "{}/{} seed {}: best epoch {}, test mIoU {:.2}, oIoU {:.2}",
                r.ablation, r.variant, r.seed, r.best_epoch, r.test.miou, r.test.oiou
            ),
            None => println!(
                "{}/{} stopped early (resumable)",
                spec.ablation, spec.variant
            ),
        }
        Ok(())
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

/// Runs the command.
pub fn run(devices: DeviceList, args: RunSpecArgs) -> anyhow::Result<()> {
    exit_with_parent();
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the run spec from stdin")?;
    let spec = RunSpec::parse(&text, std::path::Path::new("<stdin>"))?;
    dispatch_on(&devices, RunSpecJob(args, spec))?
}
