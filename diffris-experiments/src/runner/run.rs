//! One run (a variant of an ablation with one seed), end to end: its records written before
//! anything starts, its inputs, training, evaluation of the selected model and the saved
//! outputs; and a list of runs, in this process or one process each.

use diffris_model::ops::SdBackend;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use diffris_model::sd::StableDiffusion;

use crate::device::backend::RunTarget;
use crate::eval::evaluate::{baselines, evaluate_split};
use crate::eval::metrics::Metrics;
use crate::inputs::encoded::EncodedSplit;
use crate::runner::prepare::{Shared, prepare_inputs};
use crate::runner::record::{
    DivergedRun, EnvRecord, Outcome, RunResult, TrainedAs, finished, outcome_line,
    read_weights_generator, spec_dir, spec_ron, write_json,
};
use crate::runner::workspace::Workspace;
use crate::spec::profile::RunSpec;
use crate::training::divergence::Diverged;
use crate::training::{TrainOptions, Trainee, train};
use crate::util::atomic_file::write_atomic;
use crate::util::lock::{lock_path, try_lock};
use crate::util::progress::say;

/// A run folder left by a run that failed before its first epoch ended (unreadable data, say):
/// only its records, nothing to resume or lose.
fn never_trained(dir: &Path) -> bool {
    ["epochs.json", "checkpoint", "result.json"]
        .iter()
        .all(|f| !dir.join(f).exists())
}

/// What a run writes into its folder before its first epoch ends: its records and burn-train's
/// per-split logs (and temporary files of an interrupted write, `.NAME.tmp-PID`).
const FIRST_RECORDS: [&str; 6] = [
    "config.ron",
    "env.json",
    "progress.log",
    "experiment.log",
    "train",
    "valid",
];

/// Why the folder at a run's path must be left as it is (`None`: it may be removed). Without
/// `--restart` only a folder of nothing but [`FIRST_RECORDS`] may go (a run that never trained);
/// with it, any run folder (one with the `config.ron` every run writes first). Anything else is
/// not diffris's to delete: a folder of other files that happens to sit at the run's path.
fn keep_reason(dir: &Path, restart: bool) -> anyhow::Result<Option<String>> {
    if restart && dir.join("config.ron").is_file() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let name = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let temporary = name.starts_with('.') && name.contains(".tmp-");
        if !temporary && !FIRST_RECORDS.contains(&name.as_str()) {
            return Ok(Some(if restart {
                format!("it holds `{name}` and no config.ron, so it is not a run folder")
            } else {
                format!(
                    "it holds `{name}`, which a run that never trained does not write (without \
                     --restart only such a run is removed)"
                )
            }));
        }
    }
    Ok(None)
}

/// The generator of the random weights a run reads ([`crate::inputs::frozen::random_sd_dir`]): the one
/// it recorded when it resumes (a folder with training state, without `--restart`), so that it
/// continues with the weights it started with (`None`: a run from before they were recorded,
/// whose weights carry the older folder name); this backend's for a run that starts.
pub fn run_weights_generator(
    dir: &Path,
    ws: &Workspace,
    target: &RunTarget,
) -> anyhow::Result<Option<String>> {
    if dir.exists() && !ws.restart && !never_trained(dir) {
        read_weights_generator(dir)
    } else {
        Ok(Some(target.weights_generator.clone()))
    }
}

/// How a run of `spec` trains on `target` with this build: the samples of each pass of a full
/// batch over the devices ([`crate::training::loader::micro_batches`]) and, on several devices,
/// how they share it.
pub fn trained_as(spec: &RunSpec, target: &RunTarget) -> TrainedAs {
    let devices = target.devices.len().max(1);
    let t = &spec.train;
    let passes =
        crate::training::loader::micro_batches(t.batch_size, t.batch_size, t.pass_size(), devices)
            .into_iter()
            .map(|(range, _)| range.len())
            .collect();
    TrainedAs::here(passes, (devices > 1).then(|| target.parallel.to_string()))
}

/// Runs (or reuses) one run: its outcome (finished, or diverged), `None` when `--stop-after`
/// stopped it early.
pub fn run_one<B: SdBackend>(
    spec: &RunSpec,
    ws: &Workspace,
    shared: &mut Shared<B>,
    device: &B::Device,
    target: &RunTarget,
) -> anyhow::Result<Option<Outcome>> {
    let dir = spec_dir(&ws.results, spec);
    if let Some(done) = finished(&dir, spec)?
        && !ws.restart
    {
        if let Some(note) =
            crate::runner::record::reuse_note(&dir, &spec.variant, &trained_as(spec, target))
        {
            crate::util::progress::say(&ws.progress, note);
        }
        return Ok(Some(done));
    }
    // One process per run directory (a second one would interleave its checkpoints and logs
    // with the first's). The lock sits beside the directory, so `--restart` can remove it.
    let _lock = try_lock(&lock_path(&dir))?.map_err(|owner| {
        anyhow::anyhow!(
            "{} is being trained by {owner}: wait for it to finish, or write this run \
             elsewhere (--results)",
            dir.display()
        )
    })?;
    if let Some(done) = finished(&dir, spec)?
        && !ws.restart
    {
        // It finished between the check above and the lock (the check comes first so that a
        // finished run is reused without writing a lock, also in a read-only results folder).
        return Ok(Some(done));
    }
    let config_text = spec_ron(spec)?;
    let now = trained_as(spec, target);
    if dir.exists() {
        let saved = std::fs::read_to_string(dir.join("config.ron")).unwrap_or_default();
        // A run that failed before its first epoch ended (unreadable data, say) left only its
        // records: nothing to resume or lose, so it starts over without --restart.
        if ws.restart || never_trained(&dir) {
            if let Some(why) = keep_reason(&dir, ws.restart)? {
                anyhow::bail!(
                    "{} is this run's path, and is left as it is: {why}. Move it away, or write \
                     the runs elsewhere (--results)",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        } else if dir.join("result.json").is_file() {
            // Finished, but not with this config (`finished` compared them).
            anyhow::bail!(
                "{} holds a run that has ended (its result.json), with another config than this \
                 command's: --restart trains it again with this one (or write the runs \
                 elsewhere, --results)",
                dir.display()
            );
        } else if !ws.resume || saved != config_text {
            anyhow::bail!(
                "{} holds an unfinished run{}: pass --resume to continue it or --restart to start over",
                dir.display(),
                if saved != config_text {
                    " with a different config"
                } else {
                    ""
                }
            );
        } else if let Some(then) = TrainedAs::of(&dir)
            && then.split_differs(&now)
        {
            // Continuing with another split would mix two ways of summing each batch's gradient
            // in one run (a preempted 8-GPU job resumed on 4, say).
            anyhow::bail!(
                "{} was started with {}, and would continue with {}: a run's numbers depend on \
                 how each batch is split into passes, so resume it on the devices (and \
                 --micro-batch, --data-parallel) it started with, or --restart it",
                dir.display(),
                then.split(),
                now.split()
            );
        }
    }
    let generator = run_weights_generator(&dir, ws, target)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("config.ron"), config_text.as_bytes())?;
    let env = EnvRecord {
        weights_generator: generator.clone(),
        passes: now.passes.clone(),
        ..EnvRecord::now(target, spec.seed)
    };
    write_json(&dir.join("env.json"), &env)?;

    // The batches of evaluation (and, in `inputs`, of encoding) that fit the device.
    let plan =
        crate::plan::Plan::of::<B>(spec, device, target.devices.len(), &ws.budget, ws.threads);

    // Frozen encoders and data.
    let sd_key = prepare_inputs::<B>(spec, ws, device, generator.as_deref())?;
    let [train_data, val_data, test_data] = shared.encoded_splits(spec, &sd_key, ws, device)?;
    let val_eval = val_data.clone();

    // The model: trainable parts seeded by the run's seed, frozen parts from the checkpoint.
    type AB<B> = Autodiff<B>;
    AB::<B>::seed(device, spec.seed);
    let sd_train: StableDiffusion<AB<B>> = shared
        .frozen(spec, &sd_key, device)?
        .0
        .clone()
        .train::<AB<B>>();
    let model = Trainee {
        model: spec.model.init(sd_train, device),
    };
    let _ = model.num_params(); // initialise the trainable weights now, in a fixed order

    let started = Instant::now();
    let bar = ws.bar(format!(
        "{}/{} seed {}",
        spec.ablation, spec.variant, spec.seed
    ));
    let label = format!("{}/{} seed {}", spec.ablation, spec.variant, spec.seed);
    let trained = match train::<AB<B>>(
        model,
        train_data,
        val_data,
        &spec.train,
        &dir,
        &target.burn_devices(device),
        TrainOptions {
            seed: spec.seed,
            resume: ws.resume,
            stop_after: ws.stop_after,
            bar,
            heartbeat: Some(ws.heartbeat(format!("{label} training"), &dir)),
            parallel: target.parallel,
            eval_batch: Some(plan.eval.batch),
        },
    ) {
        Ok(trained) => trained,
        Err(e) => {
            let Some(Diverged(d)) = e.downcast_ref::<Diverged>() else {
                return Err(e);
            };
            let outcome = Outcome::Diverged(DivergedRun {
                ablation: spec.ablation.clone(),
                variant: spec.variant.clone(),
                label: spec.label.clone(),
                seed: spec.seed,
                diverged: d.clone(),
                train_seconds: started.elapsed().as_secs_f64(),
            });
            outcome.save(&dir)?;
            return Ok(Some(outcome));
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();
    trained.log.write_csv(&dir.join("metrics.csv"))?;
    if ws.stop_after.is_some_and(|s| s < spec.train.epochs) {
        return Ok(None);
    }

    let evaluate = |data: &EncodedSplit, name: &str| -> anyhow::Result<Metrics> {
        let bar = ws.bar(format!("evaluating {name}"));
        let mut beat = ws.heartbeat(format!("{label} evaluating {name}"), &dir);
        let m = evaluate_split(
            &trained.model.model,
            data,
            spec.protocol,
            plan.eval.batch,
            device,
            &bar,
            Some(&mut beat),
        );
        bar.finish_and_clear();
        m
    };
    let val = evaluate(&val_eval, "val")?;
    let test = evaluate(&test_data, "test")?;
    let mut result = RunResult {
        ablation: spec.ablation.clone(),
        variant: spec.variant.clone(),
        label: spec.label.clone(),
        seed: spec.seed,
        best_epoch: trained.best_epoch,
        val,
        test,
        baselines: baselines(&test_data, spec.dataset, &spec.data_root)?,
        train_seconds,
        protocol: spec.protocol.label().into(),
        files: Default::default(),
    };
    let mut store = SafetensorsStore::from_file(dir.join("model.safetensors")).overwrite(true);
    trained
        .model
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("saving the trained adapter and decoder: {e}"))?;
    result.files = crate::runner::record::seal(&dir)?;
    let outcome = Outcome::Finished(result);
    outcome.save(&dir)?;
    Ok(Some(outcome))
}

/// Runs `specs` in order: in this process when `jobs` is 1, else at most `jobs` at a time, one
/// process each ([`crate::runner::parallel`]). Returns each run's outcome (`None`: stopped early); a
/// diverged run does not stop the others.
pub fn run_specs<B: SdBackend>(
    specs: &[RunSpec],
    jobs: usize,
    ws: &Workspace,
    target: &RunTarget,
    device: &B::Device,
) -> anyhow::Result<Vec<Option<Outcome>>> {
    if jobs > 1 {
        return crate::runner::parallel::run_all::<B>(specs, jobs, ws, target, device);
    }
    let mut shared = Shared::<B>::default();
    let mut results = Vec::with_capacity(specs.len());
    for spec in specs {
        let result = run_one::<B>(spec, ws, &mut shared, device, target).with_context(|| {
            format!("run {}/{} seed {}", spec.ablation, spec.variant, spec.seed)
        })?;
        say(&ws.progress, outcome_line(&spec.variant, result.as_ref()));
        results.push(result);
    }
    Ok(results)
}
