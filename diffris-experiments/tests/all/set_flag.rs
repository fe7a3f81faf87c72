//! `--set PATH=VALUE` through the binary: the resolved run specs a dry run prints (the same
//! values each run writes to its `config.ron`) carry the settings, applied before the profile;
//! a value of the wrong type or an unknown path stops the command with the setting named.

use crate::binary;

const ABLATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");

fn dry_run(extra: &[&str]) -> (bool, String) {
    let cache = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut cmd = binary::diffris();
    cmd.args([
        "ablation",
        "cp_adapter",
        "--dry-run",
        "--only",
        "full",
        "--ablations",
        ABLATIONS,
    ])
    .arg("--cache")
    .arg(cache.path())
    .arg("--results")
    .arg(results.path())
    .args(extra);
    binary::outcome(&mut cmd)
}

/// The RON text from the first `key` (`oaqil: (`, `decoder: pcmrd(`) in `text` up to the
/// bracket that closes it.
fn section<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let body = &text[start..];
    let mut depth = 0;
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &body[..=i];
                }
            }
            _ => {}
        }
    }
    panic!("unclosed {key} in {text}")
}

#[test]
fn settings_reach_the_resolved_runs() {
    let (ok, plain) = dry_run(&[]);
    assert!(ok, "{plain}");
    assert!(
        !plain.contains("oaqil"),
        "the layout is left out at its defaults: {plain}"
    );
    let (ok, text) = dry_run(&[
        "--set",
        "model.decoder.oaqil.dropout=0.1",
        "--set",
        "model.decoder.temperature=clamped_cgformer",
        "--set",
        "train.lr=0.0003",
    ]);
    assert!(ok, "{text}");
    let oaqil = section(&text, "oaqil: (");
    assert!(oaqil.contains("dropout: 0.1"), "{oaqil}");
    assert!(text.contains("temperature: clamped_cgformer"), "{text}");
    let train = section(&text, "train: (");
    assert!(train.contains("lr: 0.0003"), "{train}");
    // Applied before the tiny profile, which narrows only widths a recipe leaves at the
    // paper's: a width set here is kept (the decoder is 16 wide otherwise).
    let (ok, wide) = dry_run(&["--set", "model.decoder.hidden=24"]);
    assert!(ok, "{wide}");
    assert!(
        section(&wide, "decoder: pcmrd(").contains("hidden: 24"),
        "{wide}"
    );
    assert!(
        section(&plain, "decoder: pcmrd(").contains("hidden: 16"),
        "{plain}"
    );
}

#[test]
fn a_bad_setting_stops_the_command_naming_it() {
    for (set, says) in [
        (
            "model.decoder.hidden=wide",
            "`model.decoder.hidden` does not take this value: Expected integer",
        ),
        (
            "model.decoder.widht=3",
            "`model.decoder.widht` is not a field",
        ),
        (
            "model.adapter.reasoning_query=both",
            "expected either `original` or `encoded`",
        ),
    ] {
        let (ok, text) = dry_run(&["--set", set]);
        assert!(!ok, "{set}: {text}");
        assert!(
            text.contains(&format!("cp_adapter/full: --set {set}")),
            "{text}"
        );
        assert!(text.contains(says), "{set}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    let (ok, text) = dry_run(&["--set", "train.lr"]);
    assert!(!ok && text.contains("has no `=`"), "{text}");
}
