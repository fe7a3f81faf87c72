//! What the subcommands share: the options of the commands that train, running the variants of
//! an ablation file, and printing metrics.

use diffris_model::ops::SdBackend;
use diffris_model::precision::Precision;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::MultiProgress;

use crate::device::backend::{BackendJob, DeviceList, RunTarget, dispatch_on};
use crate::eval::metrics::{Metrics, PR_THRESHOLDS};
use crate::plan::estimate::MemoryEstimate;
use crate::plan::{Budget, Plan, auto_micro_batch};
use crate::report::Written;
use crate::runner::parallel::default_jobs;
use crate::runner::record::spec_ron;
use crate::runner::run::run_specs;
use crate::runner::workspace::Workspace;
use crate::spec::profile::{MicroBatch, ProfileName, Resolver, RunOverrides, Setup};
use crate::spec::recipe::{AblationFile, Variant, locate};
use crate::util::cache::default_cache;
use crate::util::progress::say;

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
    /// Seconds between the progress lines a run prints when its progress bars are hidden
    /// (stdout not a terminal, or a run in its own process); every run also writes them to its
    /// directory's `progress.log`.
    #[arg(long, default_value_t = 60.0,
          value_parser = super::bounds::within(super::bounds::LOG_EVERY.0, super::bounds::LOG_EVERY.1))]
    pub log_every: f64,
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
}

/// Which runs of an ablation file to run.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Ablation name (a file `ablations/NAME.ron`) or path to a `.ron` file.
    pub name: String,
    /// Print every resolved run spec and exit.
    pub dry_run: bool,
    /// Only these variants (all when empty).
    pub only: Vec<String>,
    /// These seeds (the file's when empty).
    pub seeds: Vec<u64>,
    pub run: RunArgs,
}

/// Prints metrics the way the tables name them.
pub fn print_metrics(name: &str, m: &Metrics) {
    let pr: Vec<String> = PR_THRESHOLDS
        .iter()
        .zip(m.precision)
        .map(|(t, p)| format!("Pr@{t} {p:.2}"))
        .collect();
    println!(
        "{name:<22} mIoU {:6.2}  oIoU {:6.2}  {}  ({} samples)",
        m.miou,
        m.oiou,
        pr.join("  "),
        m.samples
    );
}

/// The micro-batch a run of `spec` already holds in its directory (not under `--restart`), when
/// its config is `spec`'s but for the micro-batch: `--micro-batch auto` continues a run (or
/// reuses a finished one) with the micro-batch it was started with, whatever device it started
/// on.
fn recorded_micro_batch(ws: &Workspace, spec: &crate::spec::profile::RunSpec) -> Option<usize> {
    if ws.restart {
        return None;
    }
    let saved =
        crate::runner::record::read_spec(&crate::runner::record::spec_dir(&ws.results, spec))
            .ok()?;
    let mut same = spec.clone();
    same.train.micro_batch = saved.train.micro_batch;
    (same == saved).then_some(saved.train.micro_batch).flatten()
}

/// Writes the table and plots of `file` from the saved runs whose config is the one `resolver`
/// and `overrides` resolve (the runs this command would make), and says which finished runs it
/// left out.
pub fn write_tables(
    file: &AblationFile,
    resolver: &Resolver,
    overrides: &RunOverrides,
    results: &std::path::Path,
) -> anyhow::Result<Written> {
    let expected = |v: &Variant, seed: u64, saved: &crate::spec::profile::RunSpec| {
        let mut spec = resolver.resolve_variant(file, v, seed, overrides)?;
        if resolver.auto_micro_batch(overrides, &spec) {
            spec.train.micro_batch = saved.train.micro_batch;
        }
        spec_ron(&spec)
    };
    let written = crate::report::write_ablation(file, results, &expected)?;
    if !written.skipped.is_empty() {
        eprintln!(
            "left {} finished run(s) out of the {} table: their config differs from what this \
             command resolves (another profile, recipe or --epochs/--batch-size/--micro-batch/--lr/--precision/\
             --limit-* flags, or another --cache, where the tiny profile's data lives):",
            written.skipped.len(),
            file.name
        );
        for dir in &written.skipped {
            eprintln!("  {}", dir.display());
        }
    }
    Ok(written)
}

/// Runs the selected runs of an ablation file, then writes its table and plots.
pub fn run_ablation(devices: DeviceList, selection: Selection) -> anyhow::Result<()> {
    dispatch_on(&devices, Ablation(selection))?
}

struct Ablation(Selection);

impl BackendJob for Ablation {
    type Output = anyhow::Result<()>;

    fn run<B: SdBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        let progress = MultiProgress::new();
        let (mut ws, resolver) = a.run.resolve(progress.clone())?;
        let path = locate(&a.name, &a.run.ablations)?;
        let file = AblationFile::load(&path)?;
        let overrides = a.run.overrides();
        let mut specs = resolver.resolve_file(&file, &a.only, &a.seeds, &overrides)?;
        for s in &specs {
            crate::runner::prepare::check_inputs_exist(s)?;
        }
        let jobs = a
            .run
            .jobs
            .unwrap_or_else(|| default_jobs(&target.devices, resolver.profile))
            .clamp(1, specs.len().max(1));
        // What each run may use of the device (where its size is known): the runs' micro-batches
        // under `auto`, and the batches of their evaluation and encoding, are chosen to fit it.
        let capacity = crate::device::usage::capacity(target.spec)?;
        ws.budget = Budget::shared(capacity.clone(), jobs, target.spec);
        let devices = target.devices.len();
        let mut auto = vec![None; specs.len()];
        for (s, chosen) in specs.iter_mut().zip(&mut auto) {
            if resolver.auto_micro_batch(&overrides, s) {
                let n = match recorded_micro_batch(&ws, s) {
                    Some(n) => n,
                    None => auto_micro_batch(
                        s,
                        &MemoryEstimate::of::<B>(s, &device, devices),
                        &ws.budget,
                    )?,
                };
                s.train.micro_batch = Some(n);
                *chosen = Some(n);
            }
        }
        let estimates: Vec<_> = specs
            .iter()
            .map(|s| MemoryEstimate::of::<B>(s, &device, devices))
            .collect();
        let fits: Vec<Option<crate::plan::estimate::Fit>> = estimates
            .iter()
            .map(|e| capacity.as_ref().and_then(|c| e.fit(c, jobs)))
            .collect();
        if a.dry_run {
            for (i, ((s, fit), estimate)) in specs.iter().zip(&fits).zip(&estimates).enumerate() {
                println!(
                    "# {}/{} seed {}\n{}\n",
                    s.ablation,
                    s.variant,
                    s.seed,
                    spec_ron(s)?
                );
                if let Some(n) = auto[i] {
                    println!("# micro-batch auto: {n} sample(s) per pass\n");
                }
                let plan = Plan::new(s, estimate, &ws.budget, ws.threads);
                println!("# memory: {}\n", estimate.describe());
                for line in plan.describe() {
                    println!("# memory, {line}");
                }
                println!();
                if let Some(fit) = fit {
                    println!("# memory: {}\n", fit.line);
                }
                if !s.profile_changes.is_empty() {
                    println!(
                        "# the {} profile changed {} value(s) the recipe left at the paper's defaults:",
                        format!("{:?}", s.profile).to_lowercase(),
                        s.profile_changes.len()
                    );
                    for c in &s.profile_changes {
                        println!("#   {} {} -> {}: {}", c.field, c.paper, c.value, c.reason);
                    }
                    println!();
                }
            }
            return Ok(());
        }
        println!(
            "ablation {} ({}): {} run(s), profile {:?}, device {}",
            file.name,
            path.display(),
            specs.len(),
            resolver.profile,
            DeviceList::from_specs(&target.devices)
        );
        let started = std::time::Instant::now();
        // Said once per distinct line, naming the runs it is about (finished runs, which are
        // reused unless --restart, train nothing).
        let mut warnings: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (s, fit) in specs.iter().zip(&fits) {
            if let Some(fit) = fit.as_ref().filter(|f| !f.fits)
                && (ws.restart
                    || crate::runner::record::finished(
                        &crate::runner::record::spec_dir(&ws.results, s),
                        s,
                    )?
                    .is_none())
            {
                warnings
                    .entry(fit.line.clone())
                    .or_default()
                    .push(format!("{}/{} seed {}", s.ablation, s.variant, s.seed));
            }
        }
        for (line, runs) in warnings {
            say(
                &progress,
                format!(
                    "warning: estimated peak memory of {}: {line}",
                    runs.join(", ")
                ),
            );
        }
        if jobs > 1 {
            say(
                &progress,
                format!(
                    "training up to {jobs} runs at once, one process each (logs: {}/runs/{}/VARIANT/seed-N.log)",
                    ws.results.display(),
                    file.name
                ),
            );
        }
        let outcomes = run_specs::<B>(&specs, jobs, &ws, &target, &device)?;
        if ws.stop_after.is_some() {
            return Ok(());
        }
        let diverged: Vec<String> = outcomes
            .iter()
            .flatten()
            .filter_map(|o| match o {
                crate::runner::record::Outcome::Diverged(d) => Some(format!(
                    "{}/{} seed {}: {}",
                    d.ablation, d.variant, d.seed, d.diverged
                )),
                crate::runner::record::Outcome::Finished(_) => None,
            })
            .collect();
        let written = write_tables(&file, &resolver, &a.run.overrides(), &ws.results)?;
        println!("{}", written.markdown);
        println!(
            "wrote {} in {:.1} min",
            written
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64() / 60.0
        );
        // The table holds what finished; the command still fails, as each of these runs did.
        anyhow::ensure!(
            diverged.is_empty(),
            "{} run(s) diverged: try a lower learning rate (recorded in their result.json; \
             --restart trains them again):\n  {}",
            diverged.len(),
            diverged.join("\n  ")
        );
        Ok(())
    }
}

/// A finished run's predictions on the first `limit` samples of `split` (`None`: all): the
/// encoded split (from the encoded
/// cache under `cache` when the run's training or an earlier command encoded it) and each
/// sample's foreground probabilities at the network size, in batches that fit the device.
pub fn predict_split<B: SdBackend>(
    run: &crate::runner::reload::LoadedRun<B>,
    split: &str,
    limit: Option<usize>,
    cache: &std::path::Path,
    device: &B::Device,
    target: &RunTarget,
) -> anyhow::Result<(crate::inputs::encoded::EncodedSplit, Vec<Vec<f32>>)> {
    let spec = &run.spec;
    let budget =
        crate::plan::Budget::shared(crate::device::usage::capacity(target.spec)?, 1, target.spec);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = crate::plan::Plan::of::<B>(spec, device, 1, &budget, threads);
    let bar = indicatif::ProgressBar::new(0);
    let say = |line: String| eprintln!("{line}");
    let data = crate::runner::prepare::cached_split::<B>(
        spec,
        split,
        limit,
        &run.sd_path,
        cache,
        device,
        &say,
        |samples, path, key| {
            let sd = diffris_model::sd::StableDiffusion {
                text_encoder: run.model.text_encoder.clone(),
                vae: run.model.vae.clone(),
                unet: run.model.unet.clone(),
            };
            crate::runner::prepare::encode_into(
                spec,
                samples,
                &sd,
                &run.tokenizer,
                device,
                &plan,
                &bar,
                path,
                key,
            )
        },
    )?;
    let probs =
        crate::eval::evaluate::predict(&run.model, &data, plan.eval.batch, device, &bar, None)?;
    bar.finish_and_clear();
    Ok((data, probs))
}
