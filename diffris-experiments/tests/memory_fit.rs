//! `--dry-run` says whether each run's estimated peak memory fits its device (on the CPU backend:
//! the RAM the system reports available), and which `--micro-batch` fits when it does not.

#![cfg(feature = "flex")] // the CPU backend's capacity is the machine's RAM

mod binary;

/// The `# memory:` fit line of a paper-profile dry run of `cp_adapter/full` with `extra` flags.
fn fit_line(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    // The dry run only checks that the weights and the dataset root exist.
    let weights = dir.path().join("sd15.safetensors");
    std::fs::write(&weights, b"").unwrap();
    let data = dir.path().join("rrsisd");
    std::fs::create_dir(&data).unwrap();
    let sd = format!("sd15={}", weights.display());
    let rrsisd = format!("rrsisd={}", data.display());
    let ablations = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
    let mut args = vec![
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
        "--dry-run",
    ];
    args.extend(extra);
    let out = binary::succeeds(&args, dir.path());
    out.lines()
        .find(|l| l.starts_with("# memory: fits") || l.starts_with("# memory: does not fit"))
        .unwrap_or_else(|| panic!("no fit line:\n{out}"))
        .to_string()
}

#[test]
fn the_dry_run_says_whether_the_paper_batch_fits_the_machine() {
    // Batch 32 in one pass: about 109 GiB with the rest of the process, more than any machine
    // this runs on offers; the advice names a micro-batch that fits the estimate.
    let whole = fit_line(&[]);
    assert!(
        whole.starts_with(
            "# memory: does not fit: about 109.2 GiB with the rest of the process, more than the "
        ) && whole.contains(" GiB of RAM available; "),
        "{whole}"
    );
    let advised: Option<usize> = whole
        .rsplit("--micro-batch ")
        .next()
        .and_then(|t| t.strip_suffix(" fits"))
        .and_then(|n| n.parse().ok());
    match advised {
        // Following the advice, the dry run says it fits.
        Some(n) => {
            let followed = fit_line(&["--micro-batch", &n.to_string()]);
            assert!(followed.starts_with("# memory: fits: about "), "{followed}");
            // One more sample per pass would not.
            let more = fit_line(&["--micro-batch", &(n + 1).to_string()]);
            assert!(more.starts_with("# memory: does not fit"), "{more}");
        }
        // A machine with under 8 GiB free: not even one sample fits.
        None => assert!(whole.ends_with("alone take 4.8 GiB"), "{whole}"),
    }
}
