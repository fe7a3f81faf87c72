//! Several runs at once, one process each (`ablation --jobs N`).
//!
//! The CPU backend keeps about one core busy on the tiny profile's small tensors, and its RNG
//! (dropout, Gumbel noise) is one per process, so runs sharing a process could not stay
//! reproducible. Each run therefore gets its own `diffris run-spec` process, fed its resolved
//! spec on stdin, writing its log to `runs/ABLATION/VARIANT/seed-N.log`. A run computes exactly
//! what it computes alone.

use diffris_kernels::SdBackend;
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;

use crate::config::run_spec::ProfileName;
use crate::config::{RunDir, RunSpec};
use crate::device::backend::{DeviceList, DeviceSpec, RunTarget};
use crate::records::{Outcome, TrainedAs, outcome_line};
use crate::runner::prepare::{Shared, prepare_for_processes};
use crate::runner::workspace::Workspace;
use crate::util::progress::{say, spinner_style};

/// How many runs to train at once when the user does not say: two per core for the tiny profile
/// on the CPU backend, one otherwise (a GPU, several devices or a full-size model are already used
/// whole by one run).
///
/// A tiny-profile run keeps about one core busy, so one per core would do, but runs differ in
/// length (Table 4's row without the adapter needs no backward pass through the UNet) and one
/// per core leaves a core idle once the short run is done. The OS shares cores fairly between
/// more processes: four runs on 2 cores took 2.1x as long per batch as one alone (measured),
/// so the ablation takes about its total CPU time over the cores.
pub fn default_jobs(devices: &[DeviceSpec], profile: ProfileName) -> usize {
    if devices == [DeviceSpec::Flex] && profile == ProfileName::Tiny {
        2 * std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

struct Running {
    index: usize,
    child: Child,
    bar: ProgressBar,
}

/// Runs `specs` with at most `jobs` processes at a time and returns each run's result in
/// order (`None` for a run stopped early by `--stop-after`). Finished runs are reused. When a
/// run fails, the others are stopped and the error quotes the end of its log.
pub fn run_all<B: SdBackend>(
    specs: &[RunSpec],
    jobs: usize,
    ws: &Workspace,
    target: &RunTarget,
    device: &B::Device,
) -> anyhow::Result<Vec<Option<Outcome>>> {
    let mut results: Vec<Option<Outcome>> = vec![None; specs.len()];
    let mut pending = VecDeque::new();
    let mut shared = Shared::<B>::default();
    for (i, spec) in specs.iter().enumerate() {
        let dir = RunDir::of(&ws.results, spec);
        match dir.finished(spec)? {
            Some(done) if !ws.restart => {
                say(&ws.progress, outcome_line(&spec.variant, Some(&done)));
                if let Some(note) = dir.reuse_note(&spec.variant, &TrainedAs::planned(spec, target))
                {
                    say(&ws.progress, note);
                }
                results[i] = Some(done);
            }
            _ => {
                // Weights, data and (where the cache owns them) encoded splits are written
                // here, once, before any process reads them.
                // (With the weights the run reads: a resumed run's recorded ones.)
                let generator = dir.weights_generator_for(ws.restart, target)?;
                prepare_for_processes::<B>(spec, &mut shared, ws, device, generator.as_deref())?;
                pending.push_back(i);
            }
        }
    }
    drop(shared); // the runs read the encoded splits from the cache
    let exe = std::env::current_exe().context("locating the diffris executable")?;
    let threads = (ws.threads / jobs.max(1)).max(1);
    let style = spinner_style();
    let mut running: Vec<Running> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < jobs.max(1)
            && let Some(i) = pending.pop_front()
        {
            let spec = &specs[i];
            let child = spawn(&exe, spec, ws, target, threads)?;
            let bar = ws.progress.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!(
                "{}/{} seed {}",
                spec.ablation, spec.variant, spec.seed
            ));
            bar.set_message(format!("training in process {}", child.id()));
            bar.enable_steady_tick(Duration::from_millis(250));
            running.push(Running {
                index: i,
                child,
                bar,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut k = 0;
        while k < running.len() {
            let Some(status) = running[k].child.try_wait()? else {
                k += 1;
                continue;
            };
            let job = running.swap_remove(k);
            job.bar.finish_and_clear();
            let spec = &specs[job.index];
            let dir = RunDir::of(&ws.results, spec);
            let log = dir.process_log();
            if !status.success() {
                for mut other in running.drain(..) {
                    let _ = other.child.kill();
                    let _ = other.child.wait();
                    other.bar.finish_and_clear();
                }
                anyhow::bail!(
                    "run {}/{} seed {} failed ({status}); the end of {}:\n{}",
                    spec.ablation,
                    spec.variant,
                    spec.seed,
                    log.display(),
                    tail(&log, 20)
                );
            }
            results[job.index] = dir.finished(spec)?;
            if results[job.index].is_none() && ws.stop_after.is_none() {
                anyhow::bail!(
                    "run {}/{} seed {} exited without a result; see {}",
                    spec.ablation,
                    spec.variant,
                    spec.seed,
                    log.display()
                );
            }
            say(
                &ws.progress,
                outcome_line(&spec.variant, results[job.index].as_ref()),
            );
        }
    }
    Ok(results)
}

/// Starts `diffris run-spec` for one spec, its spec on stdin and its output in its log.
fn spawn(
    exe: &Path,
    spec: &RunSpec,
    ws: &Workspace,
    target: &RunTarget,
    threads: usize,
) -> anyhow::Result<Child> {
    let log = RunDir::of(&ws.results, spec).process_log();
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--device")
        .arg(DeviceList::from_specs(&target.devices).to_string())
        .arg("--data-parallel")
        .arg(target.parallel.to_string())
        .arg("run-spec")
        .arg("--results")
        .arg(&ws.results)
        .arg("--cache")
        .arg(&ws.cache)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--log-every")
        .arg(ws.log_every.as_secs_f64().to_string());
    if ws.resume {
        cmd.arg("--resume");
    }
    if ws.restart {
        cmd.arg("--restart");
    }
    if let Some(s) = ws.stop_after {
        cmd.arg("--stop-after").arg(s.to_string());
    }
    if let Some(share) = &ws.budget.share {
        cmd.arg("--memory-gib")
            .arg((share.bytes / crate::device::usage::GIB).to_string());
    }
    // On the CPU backend the compute pool is rayon's global pool, one thread per core by
    // default: with several runs sharing the cores, each run gets its share of them instead
    // (four runs on 2 cores: 8% more batches per second than with two threads each, measured).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        cmd.env("RAYON_NUM_THREADS", threads.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(spec.to_ron()?.as_bytes())
        .context("sending the run spec to its process")?;
    drop(stdin);
    Ok(child)
}

/// The last `n` lines of a text file (empty when it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
