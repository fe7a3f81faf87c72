//! The ablation driver: the runs of an ablation file resolved, checked against their device,
//! run (or reused), and their table and plots written; `ablation`, `train` and `tables` are
//! this with their own selection.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::profile::{Resolver, RunOverrides};
use crate::config::recipe::{AblationFile, Variant, locate};
use crate::config::{RunDir, RunSpec};
use crate::device::backend::{BackendJob, DeviceBackend, DeviceList, RunTarget, dispatch_on};
use crate::plan::estimate::{Fit, MemoryEstimate};
use crate::plan::{Budget, Plan, auto_micro_batch};
use crate::records::Outcome;
use crate::report::Written;
use crate::runner::parallel::default_jobs;
use crate::runner::run::run_specs;
use crate::runner::workspace::Workspace;
use crate::util::progress::say;

/// Which runs of an ablation file to run, and with what.
pub struct Request {
    /// Ablation name (a file `ablations/NAME.ron`) or path to a `.ron` file.
    pub name: String,
    /// Where ablation files are looked up by name.
    pub ablations: PathBuf,
    /// Resolve and plan every run, run none.
    pub dry_run: bool,
    /// Only these variants (all when empty).
    pub only: Vec<String>,
    /// These seeds (the file's when empty).
    pub seeds: Vec<u64>,
    pub overrides: RunOverrides,
    /// Runs trained at once (`None`: [`default_jobs`]).
    pub jobs: Option<usize>,
    pub ws: Workspace,
    pub resolver: Resolver,
}

/// What the driver did, for the command to print.
pub enum Report {
    /// `--dry-run`: every resolved spec with its memory plan, as text.
    Planned(String),
    /// `--stop-after` stopped the runs (resumable): no table.
    Stopped,
    /// The runs ended and the table was written; `diverged` names the runs that diverged.
    Done {
        written: Written,
        minutes: f64,
        diverged: Vec<String>,
    },
}

impl Report {
    /// Prints what the command reports, and fails when a run diverged (the table holds what
    /// finished; the command still fails, as each of these runs did).
    pub fn print(self) -> anyhow::Result<()> {
        match self {
            Self::Planned(text) => print!("{text}"),
            Self::Stopped => {}
            Self::Done {
                written,
                minutes,
                diverged,
            } => {
                println!("{}", written.markdown);
                println!(
                    "wrote {} in {minutes:.1} min",
                    written
                        .files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                anyhow::ensure!(
                    diverged.is_empty(),
                    "{} run(s) diverged: try a lower learning rate (recorded in their \
                     result.json; --restart trains them again):\n  {}",
                    diverged.len(),
                    diverged.join("\n  ")
                );
            }
        }
        Ok(())
    }
}

/// Runs the selected runs of an ablation file on `devices`, then writes its table and plots.
pub fn run(devices: &DeviceList, request: Request) -> anyhow::Result<Report> {
    dispatch_on(devices, Ablation(request))?
}

struct Ablation(Request);

impl BackendJob for Ablation {
    type Output = anyhow::Result<Report>;

    fn plans_only(&self) -> bool {
        self.0.dry_run
    }

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<Report> {
        let Request {
            name,
            ablations,
            dry_run,
            only,
            seeds,
            overrides,
            jobs,
            mut ws,
            resolver,
        } = self.0;
        let progress = ws.progress.clone();
        let path = locate(&name, &ablations)?;
        let file = AblationFile::load(&path)?;
        let mut specs = resolver.resolve_file(&file, &only, &seeds, &overrides)?;
        let seeds_note = resolver.seeds_note(&file, &seeds);
        for s in &specs {
            crate::runner::prepare::check_inputs_exist(s)?;
        }
        let jobs = jobs
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
        // A batch that cannot be cut into a pass for every device trains on nothing: said before
        // anything is encoded (and in a dry run), not after.
        for s in &specs {
            let (batch, pass) = (s.train.batch_size, s.train.pass_size());
            anyhow::ensure!(
                !crate::training::loader::micro_batches(batch, batch, pass, devices).is_empty(),
                "{}/{}: a batch of {batch} sample(s) cannot be shared by {devices} devices (each \
                 needs at least one sample per pass): use a batch of at least {devices} or fewer \
                 devices",
                s.ablation,
                s.variant
            );
        }
        let estimates: Vec<_> = specs
            .iter()
            .map(|s| MemoryEstimate::of::<B>(s, &device, devices))
            .collect();
        let fits: Vec<Option<Fit>> = estimates
            .iter()
            .map(|e| capacity.as_ref().and_then(|c| e.fit(c, jobs)))
            .collect();
        if dry_run {
            let mut out = String::new();
            if let Some(note) = &seeds_note {
                writeln!(out, "# {note}\n")?;
            }
            if let Some(why) = &target.planned_without {
                writeln!(
                    out,
                    "# planned without the device: {why}; parameters and memory figures are \
                     the same, the device's memory is {}\n",
                    match &capacity {
                        Some(c) => format!("{:.1} GiB ({})", c.bytes / (1u64 << 30) as f64, c.what),
                        None => format!(
                            "unknown (set {}=GIB to plan for a size)",
                            crate::device::usage::DEVICE_MEMORY_VAR
                        ),
                    }
                )?;
            }
            for (i, ((s, fit), estimate)) in specs.iter().zip(&fits).zip(&estimates).enumerate() {
                writeln!(
                    out,
                    "# {}/{} seed {}\n{}\n",
                    s.ablation,
                    s.variant,
                    s.seed,
                    s.to_ron()?
                )?;
                if let Some(n) = auto[i] {
                    writeln!(out, "# micro-batch auto: {n} sample(s) per pass\n")?;
                }
                let plan = Plan::new(s, estimate, &ws.budget, ws.threads);
                writeln!(out, "# memory: {}\n", estimate.describe())?;
                for line in plan.describe() {
                    writeln!(out, "# memory, {line}")?;
                }
                writeln!(out)?;
                if let Some(fit) = fit {
                    writeln!(out, "# memory: {}\n", fit.line)?;
                }
                if !s.profile_changes.is_empty() {
                    writeln!(
                        out,
                        "# the {} profile changed {} value(s) the recipe left at the paper's defaults:",
                        format!("{:?}", s.profile).to_lowercase(),
                        s.profile_changes.len()
                    )?;
                    for c in &s.profile_changes {
                        writeln!(
                            out,
                            "#   {} {} -> {}: {}",
                            c.field, c.paper, c.value, c.reason
                        )?;
                    }
                    writeln!(out)?;
                }
            }
            return Ok(Report::Planned(out));
        }
        println!(
            "ablation {} ({}): {} run(s), profile {:?}, device {}",
            file.name,
            path.display(),
            specs.len(),
            resolver.profile,
            DeviceList::from_specs(&target.devices)
        );
        if let Some(note) = &seeds_note {
            println!("{note}");
        }
        let started = std::time::Instant::now();
        // Said once per distinct line, naming the runs it is about (finished runs, which are
        // reused unless --restart, train nothing).
        let mut warnings: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (s, fit) in specs.iter().zip(&fits) {
            if let Some(fit) = fit.as_ref().filter(|f| !f.fits)
                && (ws.restart || RunDir::of(&ws.results, s).finished(s)?.is_none())
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
                    "training up to {jobs} runs at once, one process each (logs: {}/VARIANT/seed-N.log)",
                    RunDir::runs_root(&ws.results).join(&file.name).display()
                ),
            );
        }
        let outcomes = run_specs::<B>(&specs, jobs, &ws, &target, &device)?;
        if ws.stop_after.is_some() {
            return Ok(Report::Stopped);
        }
        let diverged: Vec<String> = outcomes
            .iter()
            .flatten()
            .filter_map(|o| match o {
                Outcome::Diverged(d) => Some(format!(
                    "{}/{} seed {}: {}",
                    d.ablation, d.variant, d.seed, d.diverged
                )),
                Outcome::Finished(_) => None,
            })
            .collect();
        let written = write_tables(&file, &resolver, &overrides, &ws.results)?;
        Ok(Report::Done {
            written,
            minutes: started.elapsed().as_secs_f64() / 60.0,
            diverged,
        })
    }
}

/// The micro-batch a run of `spec` already holds in its directory (not under `--restart`), when
/// its config is `spec`'s but for the micro-batch: `--micro-batch auto` continues a run (or
/// reuses a finished one) with the micro-batch it was started with, whatever device it started
/// on.
fn recorded_micro_batch(ws: &Workspace, spec: &RunSpec) -> Option<usize> {
    if ws.restart {
        return None;
    }
    let saved = RunDir::of(&ws.results, spec).read_spec().ok()?;
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
    results: &Path,
) -> anyhow::Result<Written> {
    let expected = |v: &Variant, seed: u64, saved: &RunSpec| {
        let mut spec = resolver.resolve_variant(file, v, seed, overrides)?;
        if resolver.auto_micro_batch(overrides, &spec) {
            spec.train.micro_batch = saved.train.micro_batch;
        }
        spec.to_ron()
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
