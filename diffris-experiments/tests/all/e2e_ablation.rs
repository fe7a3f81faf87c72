//! End to end through the binary on the tiny profile: a minimal two-variant ablation writes its
//! run records, tables (Markdown, CSV, LaTeX) and plots with the numbers the runs computed;
//! `tables` regenerates them; an interrupted run resumed with `--resume` ends with exactly the
//! metrics of an uninterrupted one. The two variants train in two processes at once
//! (`--jobs 2`) on splits their parent encoded into the cache, the resumed run in the command's
//! own process, so the comparison also checks that a run computes the same in either.

use crate::binary;

use std::path::Path;

use diffris_experiments::records::RunResult;

/// The `full` variant also changes a model field (the timestep) and a training field (the
/// learning rate) that no command-line flag sets: both reach its run.
const ABLATION: &str = r#"(
    version: 2,
    name: "mini",
    title: "Mini ablation",
    columns: [miou, oiou, pr50],
    base: (dataset: rrsisd),
    variants: [
        (name: "off", label: "no adapter", set: (model: (adapter: (enabled: false))), paper: (oiou: 75.52, miou: 61.43)),
        (name: "full", label: "full adapter", set: (model: (timestep: 50.0), train: (lr: 0.002)), paper: (oiou: 76.05, miou: 62.19)),
    ],
)"#;

/// Quick-run flags shared by every invocation (cache shared between tests of this file).
fn quick(cache: &Path) -> Vec<String> {
    [
        "--cache",
        cache.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--limit-train",
        "12",
        "--limit-eval",
        "8",
        "--ablations",
        ".",
        "--log-every",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The (tag, step, value) triples of a run's `scalars.jsonl`, in file order.
fn scalars(run: &Path) -> Vec<(String, i64, f64)> {
    std::fs::read_to_string(run.join("scalars.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["tag"].as_str().unwrap().to_string(),
                v["step"].as_i64().unwrap(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The records of each of a run's TensorBoard event files (oldest write first), every length
/// and data checksum checked.
fn event_records(run: &Path) -> Vec<Vec<Vec<u8>>> {
    use diffris_experiments::records::tfevents::masked_crc;
    let mut files: Vec<_> = std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    files.sort_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap());
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let mut records = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
                let crc = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
                assert_eq!(crc(&bytes[at + 8..at + 12]), masked_crc(&bytes[at..at + 8]));
                let data = &bytes[at + 12..at + 12 + len];
                assert_eq!(crc(&bytes[at + 12 + len..at + 16 + len]), masked_crc(data));
                records.push(data.to_vec());
                at += 16 + len;
            }
            records
        })
        .collect()
}

/// Checks the scalars of a finished 2-epoch run of 3 optimizer steps per epoch (one pass
/// each) against its own `metrics.csv` and learning rate; returns them.
fn check_scalars(run: &Path, lr: f64) -> Vec<(String, i64, f64)> {
    let s = scalars(run);
    let of = |tag: &str| -> Vec<(i64, f64)> {
        s.iter()
            .filter(|x| x.0 == tag)
            .map(|x| (x.1, x.2))
            .collect()
    };
    let steps = |tag: &str| of(tag).iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(steps("train/loss"), vec![1, 2, 3, 4, 5, 6], "{s:?}");
    assert_eq!(steps("train/lr"), vec![1, 2, 3, 4, 5, 6], "{s:?}");
    for tag in [
        "train_loss",
        "train_miou",
        "val_loss",
        "val_miou",
        "val_oiou",
    ] {
        assert_eq!(steps(&format!("epoch/{tag}")), vec![3, 6], "{tag}: {s:?}");
    }
    assert_eq!(
        of("train/lr")[0].1,
        lr,
        "the first step's rate is the base rate"
    );
    // The epoch's training loss is the mean of its steps' (one pass per step).
    let losses = of("train/loss");
    let mean = (losses[0].1 + losses[1].1 + losses[2].1) / 3.0;
    assert!((mean - of("epoch/train_loss")[0].1).abs() < 1e-9, "{s:?}");
    // The epoch scalars are metrics.csv's columns (written there with 4 to 6 decimals).
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let last: Vec<f64> = csv
        .lines()
        .nth(2)
        .unwrap()
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    let pairs = [
        ("train_loss", 1),
        ("train_miou", 2),
        ("val_loss", 3),
        ("val_miou", 4),
        ("val_oiou", 5),
    ];
    for (tag, col) in pairs {
        let v = of(&format!("epoch/{tag}"))[1].1;
        assert!((v - last[col]).abs() < 1e-4, "{tag}: {v} vs {csv}");
    }
    // The test metrics at the last step: result.json's.
    let r: RunResult =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(of("test/miou"), vec![(6, r.test.miou)]);
    assert_eq!(of("test/oiou"), vec![(6, r.test.oiou)]);
    assert_eq!(of("test/pr50"), vec![(6, r.test.precision[0])]);
    assert_eq!(of("test/pr90"), vec![(6, r.test.precision[4])]);
    s
}

fn result(dir: &Path, variant: &str) -> RunResult {
    let path = dir.join(format!("results/runs/mini/{variant}/seed-0/result.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn minimal_ablation_writes_tables_and_plots_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mini.ron"), ABLATION).unwrap();
    let mut args = vec!["ablation", "mini", "--jobs", "2"];
    let q = quick(cache.path());
    args.extend(q.iter().map(String::as_str));
    let printed = binary::succeeds(&args, dir.path());
    assert!(printed.contains("running the tiny profile"), "{printed}");
    assert!(printed.contains("2 runs at once"), "{printed}");
    // The parent encoded each split once, into the cache, for both runs' processes to read.
    assert!(
        printed.contains("encoded the train split (12 samples)"),
        "{printed}"
    );
    let encoded: Vec<_> = std::fs::read_dir(cache.path().join("encoded"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .collect();
    assert_eq!(encoded.len(), 3, "train, val and test, once each");

    // Every run recorded its config and environment, and its metrics per epoch.
    for variant in ["off", "full"] {
        let run = dir
            .path()
            .join(format!("results/runs/mini/{variant}/seed-0"));
        let config = std::fs::read_to_string(run.join("config.ron")).unwrap();
        assert!(
            config.contains("profile: tiny") && config.contains("seed: 0"),
            "{config}"
        );
        let spec = diffris_experiments::config::RunDir::at(&run)
            .read_spec()
            .unwrap();
        let (timestep, lr) = if variant == "full" {
            (50.0, 0.002)
        } else {
            (1.0, 1e-3)
        };
        assert_eq!(
            (spec.model.timestep, spec.train.lr),
            (timestep, lr),
            "{config}"
        );
        // The tiny profile lists what it changed; the variant's own learning rate is not among
        // its changes.
        assert!(config.contains("model.adapter.heads"), "{config}");
        assert_eq!(
            spec.profile_changes.iter().any(|c| c.field == "train.lr"),
            variant == "off",
            "{config}"
        );
        let env: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("env.json")).unwrap()).unwrap();
        assert!(env["git_revision"].is_string() && env["backend"].is_string() && env["seed"] == 0);
        // What drew the random weights, which `eval` below reads back by it.
        assert_eq!(env["weights_generator"], "flex-Cpu-v1", "{env}");
        assert!(
            env["cpu"]["features"].is_array() && env["cpu"]["arch"].is_string(),
            "{env}"
        );
        let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3, "header + 2 epochs:\n{csv}");
        // TensorBoard's scalars: the training's event file (the version, 2 x 6 step scalars and
        // 2 x 5 epoch scalars) and the test's (the version and 7 metrics), as in scalars.jsonl.
        check_scalars(&run, lr);
        let files = event_records(&run);
        assert_eq!(files.len(), 2);
        assert_eq!((files[0].len(), files[1].len()), (1 + 12 + 10, 1 + 7));
        assert!(run.join("model.safetensors").is_file());
        let log = std::fs::read_to_string(run.with_extension("log")).unwrap();
        assert!(
            log.contains(&format!("mini/{variant} seed 0: best epoch")),
            "{log}"
        );
        // Nobody watches a run in its own process: it prints progress lines (every pass, with
        // `--log-every 0`), and keeps them in its directory.
        let training = format!("mini/{variant} seed 0 training: 24/24 samples (100%)");
        assert!(log.contains(&training), "{log}");
        assert!(
            (log.contains("samples/s, ETA") || log.contains("s/sample, ETA"))
                && log.contains("step 6/6")
                && log.contains("lr "),
            "{log}"
        );
        assert!(log.contains(&format!(
            "mini/{variant} seed 0 evaluating test: 8/8 samples"
        )));
        let kept = std::fs::read_to_string(run.join("progress.log")).unwrap();
        assert!(kept.contains(&training), "{kept}");
    }

    // The tables carry the numbers the runs computed, beside the paper's.
    let (off, full) = (result(dir.path(), "off"), result(dir.path(), "full"));
    let table = std::fs::read_to_string(dir.path().join("results/mini/table.md")).unwrap();
    for r in [&off, &full] {
        assert!(table.contains(&format!("{:.2}", r.test.miou)), "{table}");
        assert!(table.contains(&format!("{:.2}", r.test.oiou)), "{table}");
        assert!(
            table.contains(&format!("{:.2}", r.test.precision[0])),
            "{table}"
        );
    }
    assert!(
        table.contains("61.43") && table.contains("76.05") && table.contains("Tiny profile"),
        "{table}"
    );
    let csv = std::fs::read_to_string(dir.path().join("results/mini/table.csv")).unwrap();
    let row = csv.lines().find(|l| l.starts_with("full,")).unwrap();
    assert!(
        row.contains(&format!("{:.4}", full.test.miou)) && row.contains(",76.05,"),
        "{row}"
    );
    let tex = std::fs::read_to_string(dir.path().join("results/mini/table.tex")).unwrap();
    assert!(tex.contains("\\begin{tabular}") && tex.contains(&format!("{:.2}", off.test.oiou)));
    for plot in ["bars.png", "curves.png"] {
        let img = image::open(dir.path().join("results/mini").join(plot)).unwrap();
        assert!(img.width() > 100 && img.height() > 100, "{plot}");
    }

    // `eval` scores the run again (on the samples its own evaluation read) and writes each
    // sample's score: their mean is the run's mIoU, their summed intersections over summed
    // unions its oIoU.
    let run_dir = dir.path().join("results/runs/mini/full/seed-0");
    let printed = binary::succeeds(
        &[
            "eval",
            "--run",
            run_dir.to_str().unwrap(),
            "--cache",
            cache.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    let csv_path = run_dir.join("per_sample-test-lavt.csv");
    assert!(printed.contains("per_sample-test-lavt.csv"), "{printed}");
    let per_sample = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = per_sample.lines();
    assert_eq!(
        lines.next(),
        Some("index,image,expression,iou,intersection,union")
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| {
            // The two quoted fields hold no commas in SynthRS; split the numeric tail.
            let cells: Vec<&str> = l.rsplitn(4, ',').collect();
            cells.iter().rev().map(|c| c.to_string()).collect()
        })
        .collect();
    assert_eq!(rows.len(), 8, "{per_sample}");
    let ious: Vec<f64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    let (i, u): (u64, u64) = rows.iter().fold((0, 0), |(i, u), r| {
        (
            i + r[2].parse::<u64>().unwrap(),
            u + r[3].parse::<u64>().unwrap(),
        )
    });
    let mean = ious.iter().sum::<f64>() / ious.len() as f64;
    // Per-sample IoUs are printed with 4 decimals: their mean is within 1e-4 of the mIoU.
    assert!(
        (mean - full.test.miou).abs() < 1e-4,
        "{mean} vs {}",
        full.test.miou
    );
    assert!(
        (100.0 * i as f64 / u as f64 - full.test.oiou).abs() < 1e-6,
        "{i}/{u} vs {}",
        full.test.oiou
    );

    // `eval --set` changes model fields for one evaluation: its scores go to a file of their
    // own, named by a digest of the settings and listed beside it; the run's files stay.
    let before = std::fs::read(&csv_path).unwrap();
    let set = "model.decoder.gumbel_at_eval=true";
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--run",
            run_dir.to_str().unwrap(),
            "--cache",
            cache.path().to_str().unwrap(),
        ];
        args.extend(extra);
        binary::outcome(binary::diffris().args(&args).current_dir(dir.path()))
    };
    let (ok, printed) = eval(&["--set", set]);
    assert!(ok, "{printed}");
    let set_csv: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("per_sample-test-lavt-set-") && n.ends_with(".csv"))
        .collect();
    assert_eq!(set_csv.len(), 1, "{set_csv:?}");
    assert!(printed.contains(&set_csv[0]), "{printed}");
    let listed = std::fs::read_to_string(run_dir.join(set_csv[0].replace(".csv", ".set"))).unwrap();
    assert_eq!(listed, format!("--set {set}\n"));
    assert_eq!(
        std::fs::read(&csv_path).unwrap(),
        before,
        "the run's own scores are kept"
    );
    let (ok, printed) = eval(&["--set", "train.lr=1"]);
    assert!(!ok && printed.contains("model fields only"), "{printed}");
    // A width that does not match the trained weights fails on them, without a panic.
    let (ok, printed) = eval(&["--set", "model.decoder.hidden=8"]);
    assert!(!ok && !printed.contains("panicked"), "{printed}");

    // The run recorded each test sample's score when it finished (sealed with it): the same
    // intersections and unions as `eval` computes again, which the table's intervals rest on.
    let recorded = std::fs::read_to_string(run_dir.join("test_scores.csv")).unwrap();
    let counts: Vec<(String, String)> = recorded
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.rsplitn(3, ',').collect();
            (c[1].to_string(), c[0].to_string())
        })
        .collect();
    let again: Vec<(String, String)> = rows.iter().map(|r| (r[2].clone(), r[3].clone())).collect();
    assert_eq!(counts, again, "{recorded}");
    assert!(
        full.files.contains_key("test_scores.csv"),
        "{:?}",
        full.files
    );
    let full_line = table
        .lines()
        .find(|l| l.contains("| full adapter |"))
        .unwrap();
    assert!(
        full_line.contains(&format!("{:.2} [", full.test.miou)),
        "{table}"
    );
    assert!(
        table.contains(
            "[lo, hi]: the 95% interval of our test mean, from a bootstrap over the 8 test samples"
        ),
        "{table}"
    );

    // `figures` draws the best, median and worst samples of the first run (by the IoUs the
    // per-sample CSV holds) with both runs' predictions.
    let best = (0..ious.len())
        .max_by(|&a, &b| ious[a].total_cmp(&ious[b]).then(b.cmp(&a)))
        .unwrap();
    let fig = dir.path().join("fig.png");
    let off_dir = dir.path().join("results/runs/mini/off/seed-0");
    let printed = binary::succeeds(
        &[
            "figures",
            "--run",
            run_dir.to_str().unwrap(),
            "--run",
            off_dir.to_str().unwrap(),
            "--panel",
            "96",
            "--out",
            fig.to_str().unwrap(),
            "--cache",
            cache.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        printed.contains(&format!("best: sample {best} ")),
        "{printed}"
    );
    let rows = printed.lines().filter(|l| l.contains(": sample ")).count();
    assert!((1..=3).contains(&rows), "{printed}");
    let img = image::open(&fig).unwrap();
    // Four panels of 96 px (image, ground truth, two runs); a 22 px band above the panels
    // and under each row (the tiny profile's images are square).
    assert_eq!(
        (img.width(), img.height()),
        (4 * 96, 22 + rows as u32 * (96 + 22))
    );

    explain_writes_every_file(dir.path(), cache.path(), &run_dir, &off_dir, &ious);

    // `tables` regenerates the same table from the saved runs, without training, given the
    // settings the runs were made with.
    std::fs::remove_file(dir.path().join("results/mini/table.md")).unwrap();
    let mut tables = vec!["tables", "mini"];
    tables.extend(q.iter().map(String::as_str));
    binary::succeeds(&tables, dir.path());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("results/mini/table.md")).unwrap(),
        table
    );
    // Nor does a results folder without the runs (a fresh clone holds the tables, not the
    // runs): the command fails and the table is kept.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(fresh.join("mini")).unwrap();
    std::fs::write(fresh.join("mini/table.md"), "kept").unwrap();
    let mut no_runs = tables.clone();
    no_runs.extend(["--results", fresh.to_str().unwrap()]);
    let (ok, printed) = binary::outcome(binary::diffris().current_dir(dir.path()).args(&no_runs));
    assert!(
        !ok && printed.contains("no finished run of the mini table under"),
        "{printed}"
    );
    assert_eq!(
        std::fs::read_to_string(fresh.join("mini/table.md")).unwrap(),
        "kept"
    );
    // With one run made otherwise, the table holds the other and names the one left out.
    let off_config = dir.path().join("results/runs/mini/off/seed-0/config.ron");
    let saved = std::fs::read_to_string(&off_config).unwrap();
    std::fs::write(&off_config, format!("{saved}// made otherwise\n")).unwrap();
    let printed = binary::succeeds(&tables, dir.path());
    assert!(
        printed.contains("left 1 finished run(s) out of the mini table")
            && printed.contains("runs/mini/off/seed-0"),
        "{printed}"
    );
    let partial = std::fs::read_to_string(dir.path().join("results/mini/table.md")).unwrap();
    assert!(
        partial.contains("| 1 | no adapter | – | 61.43 |")
            && partial.contains(&format!("| 2 | full adapter | {:.2} [", full.test.miou)),
        "{partial}"
    );
    std::fs::write(&off_config, saved).unwrap();
    binary::succeeds(&tables, dir.path()); // and back
    // Runs made with other settings are never averaged in; when none of them matches, the
    // command fails naming them, and the table that holds them stays as it was.
    let mut other = tables.clone();
    other.extend(["--lr", "0.5"]);
    let (ok, printed) = binary::outcome(binary::diffris().current_dir(dir.path()).args(&other));
    assert!(!ok, "{printed}");
    assert!(
        printed
            .contains("none of the 2 finished run(s) of the mini table was made with the config")
            && printed.contains("runs/mini/full/seed-0"),
        "{printed}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("results/mini/table.md")).unwrap(),
        table
    );

    // Interrupted after epoch 1 and resumed: the same final metrics as uninterrupted.
    let resumed = tempfile::tempdir().unwrap();
    std::fs::write(resumed.path().join("mini.ron"), ABLATION).unwrap();
    let mut first = vec!["ablation", "mini", "--only", "full", "--stop-after", "1"];
    first.extend(q.iter().map(String::as_str));
    binary::succeeds(&first, resumed.path());
    assert!(
        !resumed
            .path()
            .join("results/runs/mini/full/seed-0/result.json")
            .exists()
    );
    let mut again = vec!["ablation", "mini", "--only", "full", "--resume"];
    again.extend(q.iter().map(String::as_str));
    binary::succeeds(&again, resumed.path());
    let r = result(resumed.path(), "full");
    assert_eq!(
        r.test, full.test,
        "resumed run (in-process) differs from the uninterrupted one (own process)"
    );
    // Its scalars are the uninterrupted run's, each step once: the second process's event
    // file starts at step 4 with the START that withdraws anything logged after epoch 1.
    let resumed_run = resumed.path().join("results/runs/mini/full/seed-0");
    assert_eq!(
        check_scalars(&resumed_run, 0.002),
        scalars(&dir.path().join("results/runs/mini/full/seed-0"))
    );
    let files = event_records(&resumed_run);
    assert_eq!(files.len(), 3, "one per training process, and the test's");
    let start = diffris_experiments::records::tfevents::session_start_event(0.0, 4);
    assert_eq!(
        files[1][1][9..],
        start[9..],
        "the START at step 4 (after the wall time)"
    );
    assert_eq!(r.val, full.val);
    assert_eq!(r.best_epoch, full.best_epoch);

    // A resumed run continues with the random weights it started with: weights another backend
    // drew, missing from the cache, are an error naming it, not weights drawn here instead.
    let moved = tempfile::tempdir().unwrap();
    std::fs::write(moved.path().join("mini.ron"), ABLATION).unwrap();
    binary::succeeds(&first, moved.path());
    let env_path = moved.path().join("results/runs/mini/full/seed-0/env.json");
    let env = std::fs::read_to_string(&env_path).unwrap();
    assert!(
        env.contains("\"weights_generator\": \"flex-Cpu-v1\""),
        "{env}"
    );
    std::fs::write(
        &env_path,
        env.replace("\"flex-Cpu-v1\"", "\"cubecl-wgpu-DefaultDevice-v1\""),
    )
    .unwrap();
    let (ok, printed) = binary::outcome(binary::diffris().current_dir(moved.path()).args(&again));
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(
            "this run was started with random weights drawn by \
             cubecl-wgpu-DefaultDevice-v1, which this backend (flex-Cpu-v1) cannot draw"
        ),
        "{printed}"
    );
    // Back on the backend it started with, it resumes to the uninterrupted run's numbers.
    std::fs::write(&env_path, &env).unwrap();
    binary::succeeds(&again, moved.path());
    assert_eq!(result(moved.path(), "full").test, full.test);
    // The same with runs in their own processes: the parent, which writes the weights before
    // starting them, refuses too, before any run starts.
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(jobs.path().join("mini.ron"), ABLATION).unwrap();
    let mut both = vec!["ablation", "mini", "--jobs", "2", "--stop-after", "1"];
    both.extend(q.iter().map(String::as_str));
    binary::succeeds(&both, jobs.path());
    let env_path = jobs.path().join("results/runs/mini/off/seed-0/env.json");
    let env = std::fs::read_to_string(&env_path).unwrap();
    std::fs::write(
        &env_path,
        env.replace("\"flex-Cpu-v1\"", "\"cubecl-wgpu-DefaultDevice-v1\""),
    )
    .unwrap();
    let mut resume_both = vec!["ablation", "mini", "--jobs", "2", "--resume"];
    resume_both.extend(q.iter().map(String::as_str));
    let (ok, printed) = binary::outcome(
        binary::diffris()
            .current_dir(jobs.path())
            .args(&resume_both),
    );
    assert!(
        !ok && printed.contains("drawn by cubecl-wgpu-DefaultDevice-v1, which this backend"),
        "{printed}"
    );
    assert!(
        !jobs
            .path()
            .join("results/runs/mini/full/seed-0/result.json")
            .exists()
    );

    // Without the random weights it was trained with, `eval` refuses the run and names the
    // backend that drew them.
    std::fs::remove_dir_all(cache.path().join("sd-random")).unwrap();
    let (ok, printed) = binary::outcome(binary::diffris().current_dir(dir.path()).args([
        "eval",
        "--run",
        run_dir.to_str().unwrap(),
        "--cache",
        cache.path().to_str().unwrap(),
    ]));
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("which do not exist (random weights are regenerated")
            && printed.contains("on the backend that trained the run, flex-Cpu-v1)"),
        "{printed}"
    );
}

/// `explain` on a test sample of the full model (PCMRD, adapter on) and on an image and a
/// text with the adapter switched off: every file, numbers that agree with each other and
/// with `eval`'s per-sample IoU, and clear refusals of bad input.
fn explain_writes_every_file(dir: &Path, cache: &Path, full: &Path, off: &Path, ious: &[f64]) {
    let out = dir.join("explain-full");
    let index = 1;
    let printed = binary::succeeds(
        &[
            "explain",
            "--run",
            full.to_str().unwrap(),
            "--split",
            "test",
            "--index",
            &index.to_string(),
            "--steps",
            "8",
            "--panel",
            "48",
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        dir,
    );
    assert!(printed.contains("completeness gap"), "{printed}");
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("explain.json")).unwrap()).unwrap();
    let words = e["words"].as_array().unwrap();
    assert!(!words.is_empty(), "{e}");
    // Word attributions add up to the reported total; deletion IoUs are IoUs.
    let sum: f64 = words
        .iter()
        .map(|w| w["attribution"].as_f64().unwrap())
        .sum();
    let total = e["attribution"]["total"].as_f64().unwrap();
    assert!(
        (sum - total).abs() <= 1e-9 * total.abs().max(1.0),
        "{sum} vs {total}"
    );
    for w in words {
        let d = w["deletion_iou"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&d), "{w}");
        assert_ne!(w["deleted_text"], e["expression"], "{w}");
    }
    // The sample's IoU against its ground truth is the one `eval` scored (the inspection
    // pass runs on autodiff, whose attention kernel rounds differently, so a pixel on the
    // boundary may flip: within one percentage point).
    let gt = e["ground_truth_iou"].as_f64().unwrap();
    assert!(
        (100.0 * gt - ious[index]).abs() < 1.0,
        "{gt} vs {}",
        ious[index]
    );
    // PCMRD: three stages, each pixel's hard share summing to one.
    let stages = e["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3, "{e}");
    for s in stages {
        let share: f64 = s["hard_share"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((share - 1.0).abs() < 1e-9, "{s}");
    }
    let levels = e["attention_levels"].as_array().unwrap().len();
    assert_eq!(levels, 3, "{e}");
    for file in [
        "explain.png",
        "attributions.png",
        "attributions.csv",
        "image.png",
        "prediction.png",
        "ground_truth.png",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let maps = std::fs::read_dir(out.join("cross_attention"))
        .unwrap()
        .count();
    assert_eq!(
        maps,
        3 * 3 * words.len(),
        "adapted, CLIP and difference per level and word"
    );
    let assignments = std::fs::read_dir(out.join("assignments")).unwrap().count();
    assert_eq!(
        assignments,
        3 * (1 + 2),
        "hard + one per token (2), per stage"
    );
    let csv = std::fs::read_to_string(out.join("attributions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + words.len(), "{csv}");
    let sheet = image::open(out.join("explain.png")).unwrap();
    assert!(
        sheet.width() >= 48 * words.len() as u32 && sheet.height() > 10 * 48,
        "{:?}",
        (sheet.width(), sheet.height())
    );

    // An image and a text, through the model without the adapter (the two map rows agree).
    let spec = diffris_experiments::config::RunDir::at(off)
        .read_spec()
        .unwrap();
    let samples = spec.dataset.read_split(&spec.data_root, "test").unwrap();
    let out = dir.join("explain-off");
    let printed = binary::succeeds(
        &[
            "explain",
            "--run",
            off.to_str().unwrap(),
            "--image",
            samples[0].image.to_str().unwrap(),
            "--text",
            "the large building",
            "--steps",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        dir,
    );
    assert!(printed.contains("the CP-adapter is off"), "{printed}");
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("explain.json")).unwrap()).unwrap();
    let names: Vec<&str> = e["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["word"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["the", "large", "building"]);
    for w in e["words"].as_array().unwrap() {
        assert_eq!(w["attention_adapted"], w["attention_clip"], "{w}");
    }
    assert!(e["ground_truth_iou"].is_null() && !out.join("ground_truth.png").exists());

    // Bad input: named, nothing run.
    let (ok, text) = binary::outcome(binary::diffris().current_dir(dir).args([
        "explain",
        "--run",
        full.to_str().unwrap(),
        "--split",
        "test",
        "--index",
        "999",
        "--out",
        dir.join("x").to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]));
    assert!(
        !ok && text.contains("--index 999: split `test` has"),
        "{text}"
    );
    let (ok, text) = binary::outcome(binary::diffris().current_dir(dir).args([
        "explain",
        "--run",
        full.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]));
    assert!(!ok && text.contains("--image FILE --text"), "{text}");
    assert!(!dir.join("x").exists(), "nothing written for refused input");
}
