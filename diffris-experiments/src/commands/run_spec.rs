//! `diffris run-spec` (hidden): trains and evaluates one resolved run spec read from stdin
//! ([`crate::runner::run_spec`]), as the ablation driver's parallel runs ask it to.

use std::io::Read;
use std::path::PathBuf;

use crate::config::run_spec::RunSpec;
use crate::device::backend::DeviceList;
use crate::records::Outcome;
use crate::runner::run_spec::Request;
use anyhow::Context;

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
    #[arg(long,
          value_parser = super::bounds::within(super::bounds::MEMORY_GIB.0, super::bounds::MEMORY_GIB.1))]
    pub memory_gib: Option<f64>,
}

/// Runs the command.
pub fn run(devices: DeviceList, args: RunSpecArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the run spec from stdin")?;
    let spec = RunSpec::parse(&text, std::path::Path::new("<stdin>"))?;
    let request = Request {
        results: args.results,
        cache: args.cache,
        threads: args.threads,
        resume: args.resume,
        restart: args.restart,
        stop_after: args.stop_after,
        log_every: args.log_every,
        memory_gib: args.memory_gib,
    };
    match crate::runner::run_spec::run(&devices, request, spec.clone())? {
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
