//! `diffris ablation NAME`: runs every variant (and seed) of `ablations/NAME.ron`, then writes
//! the table in the paper's layout and the plots under `results/NAME/`.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use indicatif::MultiProgress;

use crate::backend::{BackendJob, DeviceSpec, RunTarget, dispatch};
use crate::parallel::{default_jobs, report_run, say};
use crate::profile::{ProfileName, Resolver, RunSpec, Setup};
use crate::recipe::{AblationFile, locate};
use crate::run::{Shared, Workspace, run_one, spec_ron};

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
    /// Override the learning rate of every run.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Train on the first N samples only (quick checks; recorded in the run's config).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Validate and test on the first N samples only.
    #[arg(long)]
    pub limit_eval: Option<usize>,
    /// Runs trained at once, each in its own process (default: two per core for the tiny
    /// profile on the CPU backend, otherwise 1).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Stop every run after this many epochs, leaving it resumable (for testing resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

impl RunArgs {
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

/// `$DIFFRIS_CACHE`, else `$XDG_CACHE_HOME/diffris`, else `~/.cache/diffris`, else
/// `./.diffris-cache`.
pub fn default_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("DIFFRIS_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("diffris");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("diffris");
    }
    PathBuf::from(".diffris-cache")
}

/// Arguments of `diffris ablation`.
#[derive(Debug, Clone, clap::Args)]
pub struct AblationArgs {
    /// Ablation name (a file `ablations/NAME.ron`) or path to a `.ron` file.
    pub name: String,
    /// Print every resolved run spec and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only these variants (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seeds to run (comma-separated; default: the file's).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Every run spec of an ablation file.
pub fn resolve_all(
    file: &AblationFile,
    resolver: &Resolver,
    only: &[String],
    seeds: &[u64],
    overrides: &RunArgs,
) -> anyhow::Result<Vec<RunSpec>> {
    let seeds = if seeds.is_empty() {
        file.seeds.clone()
    } else {
        seeds.to_vec()
    };
    let mut specs = Vec::new();
    for v in &file.variants {
        if !only.is_empty() && !only.contains(&v.name) {
            continue;
        }
        for &seed in &seeds {
            let mut spec =
                resolver.resolve(&file.name, &v.name, &v.label, &file.recipe(v), seed)?;
            if let Some(e) = overrides.epochs {
                spec.train.epochs = e;
            }
            if let Some(b) = overrides.batch_size {
                spec.train.batch_size = b;
            }
            if let Some(lr) = overrides.lr {
                spec.train.lr = lr;
            }
            spec.limit_train = overrides.limit_train;
            spec.limit_eval = overrides.limit_eval;
            specs.push(spec);
        }
    }
    if let Some(unknown) = only
        .iter()
        .find(|o| !file.variants.iter().any(|v| &v.name == *o))
    {
        anyhow::bail!("--only: ablation {} has no variant `{unknown}`", file.name);
    }
    Ok(specs)
}

struct Ablation(AblationArgs);

impl BackendJob for Ablation {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        let progress = MultiProgress::new();
        let (ws, resolver) = a.run.resolve(progress.clone())?;
        let path = locate(&a.name, &a.run.ablations)?;
        let file = AblationFile::load(&path)?;
        let specs = resolve_all(&file, &resolver, &a.only, &a.seeds, &a.run)?;
        if a.dry_run {
            for s in &specs {
                println!(
                    "# {}/{} seed {}\n{}\n",
                    s.ablation,
                    s.variant,
                    s.seed,
                    spec_ron(s)?
                );
            }
            return Ok(());
        }
        println!(
            "ablation {} ({}): {} run(s), profile {:?}, device {}",
            file.name,
            path.display(),
            specs.len(),
            resolver.profile,
            target.spec
        );
        let started = std::time::Instant::now();
        let jobs = a
            .run
            .jobs
            .unwrap_or_else(|| default_jobs(&target.spec, resolver.profile))
            .clamp(1, specs.len().max(1));
        if jobs > 1 {
            say(
                &progress,
                format!(
                    "training up to {jobs} runs at once, one process each (logs: {}/runs/{}/VARIANT/seed-N.log)",
                    ws.results.display(),
                    file.name
                ),
            );
            crate::parallel::run_all::<B>(&specs, jobs, &ws, &target, &device)?;
        } else {
            let mut shared = Shared::<B>::default();
            for spec in &specs {
                let result =
                    run_one::<B>(spec, &ws, &mut shared, &device, &target).with_context(|| {
                        format!("run {}/{} seed {}", spec.ablation, spec.variant, spec.seed)
                    })?;
                report_run(&progress, &spec.variant, result.as_ref());
            }
        }
        if ws.stop_after.is_some() {
            return Ok(());
        }
        let written = crate::tables::write_ablation(&file, &resolver.profile, &ws.results)?;
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
        Ok(())
    }
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: AblationArgs) -> anyhow::Result<()> {
    dispatch(device, Ablation(args))?
}
