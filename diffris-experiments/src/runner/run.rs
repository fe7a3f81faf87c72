//! One run (a variant of an ablation with one seed), end to end: its records written before
//! anything starts, its inputs, training, evaluation of the selected model and the saved
//! outputs; and a list of runs, in this process or one process each.

use std::time::Instant;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use diffris_model::sd::StableDiffusion;

use crate::config::{RunDir, RunSpec};
use crate::device::backend::{DeviceBackend, RunTarget};
use crate::eval::evaluate::{baselines, evaluate_split};
use crate::eval::metrics::{Metrics, SampleScore};
use crate::inputs::split::EncodedSplit;
use crate::records::{
    DivergedRun, EnvRecord, Outcome, RunResult, TestScores, TrainedAs, outcome_line,
};
use crate::runner::prepare::{Shared, prepare_inputs};
use crate::runner::workspace::Workspace;
use crate::training::divergence::Diverged;
use crate::training::{TrainOptions, Trainee, train};
use crate::util::lock::try_lock;
use crate::util::progress::say;

impl RunDir {
    /// Makes way for this command's run of `config` under the `--resume`/`--restart` policy:
    /// nothing to do for a new folder or one to resume (same config, same pass split `now`);
    /// removes a folder to restart (`--restart`, or a run that never trained); refuses anything
    /// else, naming why.
    fn make_way(&self, config: &str, ws: &Workspace, now: &TrainedAs) -> anyhow::Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let dir = self.path();
        let saved = self.saved_config();
        // A run that failed before its first epoch ended (unreadable data, say) left only its
        // records: nothing to resume or lose, so it starts over without --restart.
        if ws.restart || self.never_trained() {
            if let Some(why) = self.keep_reason(ws.restart)? {
                anyhow::bail!(
                    "{} is this run's path, and is left as it is: {why}. Move it away, or write \
                     the runs elsewhere (--results)",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        } else if self.has_ended() {
            // Finished, but not with this config (`finished` compared them).
            anyhow::bail!(
                "{} holds a run that has ended (its result.json), with another config than this \
                 command's: --restart trains it again with this one (or write the runs \
                 elsewhere, --results)",
                dir.display()
            );
        } else if !ws.resume || saved != config {
            anyhow::bail!(
                "{} holds an unfinished run{}: pass --resume to continue it or --restart to start over",
                dir.display(),
                if saved != config {
                    " with a different config"
                } else {
                    ""
                }
            );
        } else if let Some(then) = self.trained_as()
            && then.split_differs(now)
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
        Ok(())
    }
}

/// Runs (or reuses) one run: its outcome (finished, or diverged), `None` when `--stop-after`
/// stopped it early.
pub fn run_one<B: DeviceBackend>(
    spec: &RunSpec,
    ws: &Workspace,
    shared: &mut Shared<B>,
    device: &B::Device,
    target: &RunTarget,
) -> anyhow::Result<Option<Outcome>> {
    let dir = RunDir::of(&ws.results, spec);
    let now = TrainedAs::planned(spec, target);
    if let Some(done) = dir.finished(spec)?
        && !ws.restart
    {
        if let Some(note) = dir.reuse_note(&spec.variant, &now) {
            say(&ws.progress, note);
        }
        return Ok(Some(done));
    }
    // One process per run directory (a second one would interleave its checkpoints and logs
    // with the first's). The lock sits beside the directory, so `--restart` can remove it.
    let _lock = try_lock(&dir.lock())?.map_err(|owner| {
        anyhow::anyhow!(
            "{} is being trained by {owner}: wait for it to finish, or write this run \
             elsewhere (--results)",
            dir.path().display()
        )
    })?;
    if let Some(done) = dir.finished(spec)?
        && !ws.restart
    {
        // It finished between the check above and the lock (the check comes first so that a
        // finished run is reused without writing a lock, also in a read-only results folder).
        return Ok(Some(done));
    }
    let config_text = spec.to_ron()?;
    dir.make_way(&config_text, ws, &now)?;
    let generator = dir.weights_generator_for(ws.restart, target)?;
    dir.write_config(&config_text)?;
    let env = EnvRecord {
        weights_generator: generator.clone(),
        passes: now.passes.clone(),
        ..EnvRecord::now(target, spec.seed)
    };
    dir.write_env(&env)?;

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
        .frozen(spec, &sd_key, device, &|l| {
            crate::util::progress::say(&ws.progress, l)
        })?
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
            heartbeat: Some(
                ws.heartbeat(format!("{label} training"), &dir)
                    .with_device_memory(crate::device::usage::progress_reader(target.spec)),
            ),
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
            dir.save_outcome(&outcome)?;
            return Ok(Some(outcome));
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();
    trained.log.write_csv(&dir.metrics_csv())?;
    if ws.stop_after.is_some_and(|s| s < spec.train.epochs) {
        return Ok(None);
    }

    let evaluate =
        |data: &EncodedSplit, name: &str| -> anyhow::Result<(Metrics, Vec<SampleScore>)> {
            let bar = ws.bar(format!("evaluating {name}"));
            let mut beat = ws
                .heartbeat(format!("{label} evaluating {name}"), &dir)
                .with_device_memory(crate::device::usage::progress_reader(target.spec));
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
    let (val, _) = evaluate(&val_eval, "val")?;
    let (test, each) = evaluate(&test_data, "test")?;
    log_test_scalars(dir.path(), &test);
    dir.write_test_scores(&TestScores::new(
        test_data.samples.iter().map(|s| s.id.clone()),
        &each,
    ))?;
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
    let mut store = SafetensorsStore::from_file(dir.model()).overwrite(true);
    trained
        .model
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("saving the trained adapter and decoder: {e}"))?;
    result.files = dir.seal()?;
    let outcome = Outcome::Finished(result);
    dir.save_outcome(&outcome)?;
    Ok(Some(outcome))
}

/// Runs `specs` in order: in this process when `jobs` is 1, else at most `jobs` at a time, one
/// process each ([`crate::runner::parallel`]). Returns each run's outcome (`None`: stopped early); a
/// diverged run does not stop the others.
pub fn run_specs<B: DeviceBackend>(
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

/// The test metrics as TensorBoard scalars at the run's last logged step (`test/miou`,
/// `test/oiou`, `test/pr50` .. `test/pr90`), in a file of their own.
fn log_test_scalars(dir: &std::path::Path, test: &Metrics) {
    use crate::records::tfevents::{EventFile, Scalar, ScalarSink, now};
    let step = EventFile::last_step(dir);
    let wall_time = now();
    let at = |tag: String, value: f64| Scalar {
        wall_time,
        step,
        tag,
        value,
    };
    let mut scalars = vec![
        at("test/miou".into(), test.miou),
        at("test/oiou".into(), test.oiou),
    ];
    for (k, p) in test.precision.iter().enumerate() {
        scalars.push(at(format!("test/pr{}", 50 + 10 * k), *p));
    }
    ScalarSink::append(dir).write(&scalars);
}
