//! The options of the commands that train (`ablation`, `train`, `tables`), and what they
//! resolve to: the workspace, the profile resolver and the ablation driver's request.

use std::path::PathBuf;
use std::time::Duration;

use diffris_model::precision::Precision;
use indicatif::MultiProgress;

use crate::config::profile::{MicroBatch, Resolver, RunOverrides, Setup};
use crate::config::recipe::set::FieldSet;

use crate::config::run_spec::ProfileName;
use crate::runner::ablation::Request;
use crate::runner::workspace::Workspace;
use crate::util::cache::default_cache;

/// Options shared by the commands that train.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// `tiny` (embedded default: random tiny SD, SynthRS) or `paper` (real weights and data).
    /// Default: paper when weights or data are configured, tiny otherwise.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileName>,
    /// Setup file with weight paths and dataset roots (default: ./setup.ron when present).
    #[arg(long)]
    pub setup: Option<PathBuf>,
    /// SD weights of a version: `--sd sd15=/path/v1-5-pruned-emaonly.safetensors` (repeatable).
    #[arg(long = "sd", value_name = "NAME=PATH")]
    pub sd: Vec<String>,
    /// A dataset root: `--data rrsisd=/data/RRSIS-D` (repeatable).
    #[arg(long = "data", value_name = "NAME=DIR")]
    pub data: Vec<String>,
    /// Where run directories, tables and plots go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Where ablation files are looked up by name.
    #[arg(long, default_value = "ablations")]
    pub ablations: PathBuf,
    /// Cache for SynthRS and random weights (default: $DIFFRIS_CACHE, else ~/.cache/diffris).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Continue unfinished runs from their last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start unfinished or changed runs over (their directories are deleted).
    #[arg(long, conflicts_with = "resume")]
    pub restart: bool,
    /// Data-loading threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override the number of training epochs of every run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override the batch size of every run.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Compute every batch as passes of at most N samples whose gradients are summed before
    /// the optimizer steps (gradient accumulation; the recipe's `train.micro_batch`), or `auto`:
    /// the most samples whose pass fits the device (the paper profile's default where the
    /// recipe sets none). The run's config records the number chosen.
    #[arg(long, value_name = "N|auto")]
    pub micro_batch: Option<MicroBatch>,
    /// Override the learning rate of every run.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Precision of the frozen VAE, CLIP and UNet: f32, f16 or bf16 (the recipe's
    /// `model.precision`). The adapter, decoder, optimizer and loss stay f32.
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Train on the first N samples only (quick checks; recorded in the run's config).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Validate and test on the first N samples only.
    #[arg(long)]
    pub limit_eval: Option<usize>,
    /// Validate on about N expressions held out of the training split (whole images) instead
    /// of the dataset's validation split: for datasets published without one, such as
    /// RISBench's public download (the recipe's `val_from_train`; recorded in the run).
    #[arg(long, value_name = "N",
          value_parser = crate::commands::bounds::within(1usize, usize::MAX))]
    pub val_from_train: Option<usize>,
    /// Seconds between the progress lines a run prints when its progress bars are hidden
    /// (stdout not a terminal, or a run in its own process); every run also writes them to its
    /// directory's `progress.log`.
    #[arg(long, default_value_t = 60.0,
          value_parser = crate::commands::bounds::within(crate::commands::bounds::LOG_EVERY.0, crate::commands::bounds::LOG_EVERY.1))]
    pub log_every: f64,
    /// Any recipe field: `--set model.decoder.hidden=32`, `--set train.lr=1e-4`, `--set
    /// model.decoder.temperature=clamped_cgformer` (repeatable, applied in order to every run,
    /// before the profile; the value is RON, merged as a variant's `set:`; recorded in each
    /// run's config).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<FieldSet>,
    /// Runs trained at once, each in its own process (default: two per core for the tiny
    /// profile on the CPU backend, otherwise 1).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Stop every run after this many epochs, leaving it resumable (for testing resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

/// `--precision f32|f16|bf16`.
pub fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

impl RunArgs {
    /// The command-line settings that apply to every run.
    pub fn overrides(&self) -> RunOverrides {
        RunOverrides {
            epochs: self.epochs,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            lr: self.lr,
            precision: self.precision,
            limit_train: self.limit_train,
            limit_eval: self.limit_eval,
            val_from_train: self.val_from_train,
            sets: self.set.clone(),
        }
    }

    /// The workspace and the resolver these options describe, announcing the tiny profile when
    /// it is chosen for lack of configuration.
    pub fn resolve(&self, progress: MultiProgress) -> anyhow::Result<(Workspace, Resolver)> {
        let setup_file = self.setup.clone().or_else(|| {
            let default = PathBuf::from("setup.ron");
            default.is_file().then_some(default)
        });
        let setup = match &setup_file {
            Some(p) => Setup::load(p)?,
            None => Setup::default(),
        }
        .with_flags(&self.sd, &self.data)?;
        let profile = match self.profile {
            Some(p) => p,
            None if setup.is_empty() => {
                eprintln!(
                    "No SD weights or datasets configured: running the tiny profile (random tiny SD, \
                     synthetic SynthRS data). For the paper's setting pass --profile paper \
                     --sd sd15=PATH --data rrsisd=DIR (or a setup.ron)."
                );
                ProfileName::Tiny
            }
            None => ProfileName::Paper,
        };
        let cache = match &self.cache {
            Some(c) => c.clone(),
            None => default_cache(),
        };
        let ws = Workspace {
            results: self.results.clone(),
            cache: cache.clone(),
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            resume: self.resume,
            restart: self.restart,
            stop_after: self.stop_after,
            progress,
            log_every: Duration::from_secs_f64(self.log_every.max(0.0)),
            budget: Default::default(),
        };
        Ok((
            ws,
            Resolver {
                profile,
                setup,
                cache,
            },
        ))
    }

    /// The ablation driver's request for `name` with these options.
    pub fn request(
        &self,
        name: String,
        dry_run: bool,
        only: Vec<String>,
        seeds: Vec<u64>,
    ) -> anyhow::Result<Request> {
        let (ws, resolver) = self.resolve(MultiProgress::new())?;
        Ok(Request {
            name,
            ablations: self.ablations.clone(),
            dry_run,
            only,
            seeds,
            overrides: self.overrides(),
            jobs: self.jobs,
            ws,
            resolver,
        })
    }
}
