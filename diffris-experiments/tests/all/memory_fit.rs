//! `--dry-run` says whether each run's estimated peak memory fits its device, and which
//! `--micro-batch` fits when it does not. The device's size is fixed here with
//! `DIFFRIS_DEVICE_MEMORY_GIB` (otherwise the CPU backend's is the RAM available now, which
//! moves between runs).

#![cfg(feature = "flex")]

use crate::binary;

/// The `# memory:` fit line of a paper-profile dry run of `cp_adapter/full` with `extra` flags
/// and `memory` (the variable's value, or the machine's own figure).
fn fit_line(extra: &[&str], memory: Option<&str>) -> Result<String, String> {
    let out = dry_run(extra, memory)?;
    Ok(out
        .lines()
        .find(|l| l.starts_with("# memory: fits") || l.starts_with("# memory: does not fit"))
        .unwrap_or_else(|| panic!("no fit line:\n{out}"))
        .to_string())
}

/// The output of a paper-profile dry run of `cp_adapter/full` with `extra` flags and `memory`
/// (`Err` with the output when it fails). The dry run only checks that the weights and the
/// dataset root exist.
fn dry_run(extra: &[&str], memory: Option<&str>) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("sd15.safetensors");
    std::fs::write(&weights, b"").unwrap();
    let data = dir.path().join("rrsisd");
    std::fs::create_dir(&data).unwrap();
    let sd = format!("sd15={}", weights.display());
    let rrsisd = format!("rrsisd={}", data.display());
    let ablations = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
    let mut cmd = binary::diffris();
    cmd.current_dir(dir.path()).args([
        "train",
        "cp_adapter",
        "--variant",
        "full",
        "--profile",
        "paper",
        "--sd",
        &sd,
        "--data",
        &rrsisd,
        "--ablations",
        ablations,
        "--threads",
        "2",
        "--dry-run",
    ]);
    cmd.args(extra).env_remove("DIFFRIS_DEVICE_MEMORY_GIB");
    if let Some(m) = memory {
        cmd.env("DIFFRIS_DEVICE_MEMORY_GIB", m);
    }
    let (ok, out) = binary::outcome(&mut cmd);
    if ok { Ok(out) } else { Err(out) }
}

#[test]
fn the_dry_run_says_whether_the_paper_batch_fits_and_which_micro_batch_does() {
    // 24 GiB: batch 32 in one pass needs 3.8 + 1.0 GiB of weights and AdamW state, 102.4 GiB of
    // activations and 3 GiB for the rest of the process; (24 - 3 - 4.8) / 3.2 = 5.06 samples
    // per pass fit.
    let whole = fit_line(&["--micro-batch", "32"], Some("24")).unwrap();
    assert_eq!(
        whole,
        "# memory: does not fit: about 110.2 GiB with the rest of the process, more than the \
         24.0 GiB of device memory set by DIFFRIS_DEVICE_MEMORY_GIB; --micro-batch 5 fits"
    );
    let five = fit_line(&["--micro-batch", "5"], Some("24")).unwrap();
    assert!(five.starts_with("# memory: fits: about 23.8 GiB"), "{five}");
    let six = fit_line(&["--micro-batch", "6"], Some("24")).unwrap();
    assert!(
        six.starts_with("# memory: does not fit: about 27.0 GiB"),
        "{six}"
    );
    // Below the weights and the rest of the process, no micro-batch fits.
    let tiny = fit_line(&["--micro-batch", "32"], Some("7.5")).unwrap();
    assert!(
        tiny.ends_with(
            "not even one sample per pass fits: the frozen weights and trained \
             parameters alone take 4.8 GiB"
        ),
        "{tiny}"
    );
    // A value that is not a size is refused, naming the variable.
    let err = fit_line(&[], Some("lots")).unwrap_err();
    assert!(
        err.contains("DIFFRIS_DEVICE_MEMORY_GIB=\"lots\" is not a positive number of GiB"),
        "{err}"
    );
    // Without the variable the CPU backend's figure is the RAM available.
    let own = fit_line(&[], None).unwrap();
    assert!(own.contains(" GiB of RAM available"), "{own}");
}

/// The paper profile's micro-batch is `auto` unless one is given: the most samples per pass
/// that fit (5 of 32 in 24 GiB, as above), printed and recorded in the run's config; a device
/// too small for one sample is refused before anything is encoded. Evaluation and encoding get
/// batches of the plan too: here the pass size, on the two threads asked for.
#[test]
fn the_paper_profile_fits_its_micro_batch_and_plans_every_phase() {
    let out = dry_run(&[], Some("24")).unwrap();
    assert!(
        out.contains("# micro-batch auto: 5 sample(s) per pass"),
        "{out}"
    );
    assert!(out.contains("micro_batch: Some(5)"), "{out}");
    assert!(out.contains("# memory: fits: about 23.8 GiB"), "{out}");
    assert!(
        out.contains("# memory, evaluation: batches of 5, about 6."),
        "{out}"
    );
    assert!(
        out.contains("# memory, encoding: 2 thread(s), batches of 5, about 8."),
        "{out}"
    );
    // `auto` said outright gives the same; a number given is kept.
    let auto = dry_run(&["--micro-batch", "auto"], Some("24")).unwrap();
    assert!(auto.contains("micro_batch: Some(5)"), "{auto}");
    let four = dry_run(&["--micro-batch", "4"], Some("24")).unwrap();
    assert!(four.contains("micro_batch: Some(4)") && !four.contains("micro-batch auto"));
    let refused = dry_run(&[], Some("7.5")).unwrap_err();
    assert!(
        refused.contains("does not fit its device even one sample per pass"),
        "{refused}"
    );
    let bad = dry_run(&["--micro-batch", "some"], Some("24")).unwrap_err();
    assert!(bad.contains("neither `auto` nor a number"), "{bad}");
}
