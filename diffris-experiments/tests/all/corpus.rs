//! Runs the bad-input corpus (`tests/corpus/bad_inputs.ron`, whose header says what each case
//! holds) through the binary. Every case runs in a fresh folder; besides the case's own
//! expectation, every input must end with an exit status (not a signal) and no panic, and a
//! refused input must leave its folder as it found it (nothing changed, nothing new). All
//! failures are reported together, with the corpus's tally by outcome and class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::binary;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/bad_inputs.ron");
const ABLATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
const SD_TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../diffris-model/tests/fixtures/sd_tiny/diffusers"
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    case: String,
    class: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    generated: BTreeMap<String, Generated>,
    args: Vec<String>,
    /// The input is refused: non-zero exit, each of these in the output, the folder untouched.
    #[serde(default)]
    refused: Option<Vec<String>>,
    /// The input is handled: exit 0 and each of these in the output.
    #[serde(default)]
    accepted: Option<Vec<String>>,
    /// Skip the case in a build with this cargo feature.
    #[serde(default)]
    unless_feature: Option<String>,
}

#[derive(Debug, Deserialize)]
enum Generated {
    Repeat { text: String, times: usize },
    Noise { bytes: usize },
}

impl Generated {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Repeat { text, times } => text.repeat(*times).into_bytes(),
            // xorshift64: fixed bytes, invalid UTF-8 within the first few.
            Self::Noise { bytes } => {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                (0..*bytes)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 56) as u8 | 0x80
                    })
                    .collect()
            }
        }
    }
}

fn load() -> Vec<Case> {
    let text = std::fs::read_to_string(CORPUS).unwrap();
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(&text)
        .unwrap_or_else(|e| panic!("{CORPUS}: {e}"))
}

fn feature_enabled(name: &str) -> bool {
    match name {
        "wgpu" => cfg!(feature = "wgpu"),
        "cuda" => cfg!(feature = "cuda"),
        "tch" => cfg!(feature = "tch"),
        "flex" => cfg!(feature = "flex"),
        other => panic!("unknown feature `{other}` in the corpus"),
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.insert(p.strip_prefix(dir).unwrap().join(""), Vec::new());
                todo.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// A folder of SD-1.5's `config.json` files without weights.
fn sd15_configs(dir: &Path) -> PathBuf {
    let sd = dir.join("sd15");
    for (folder, config) in diffris_model::sd::SdConfig::sd15().diffusers_configs() {
        std::fs::create_dir_all(sd.join(folder)).unwrap();
        std::fs::write(sd.join(folder).join("config.json"), config.to_string()).unwrap();
    }
    sd
}

/// Runs one case; `Err` says how it failed, `Ok(None)` that it was skipped.
fn run_case(case: &Case) -> Result<Option<()>, String> {
    if case.unless_feature.as_deref().is_some_and(feature_enabled) {
        return Ok(None);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("case");
    std::fs::create_dir(&dir).unwrap();
    let uses = |token: &str| {
        case.args.iter().any(|a| a.contains(token))
            || case.files.values().any(|f| f.contains(token))
    };
    // Made outside the case's folder, so that the folder holds only what the case gives.
    let sd15 = uses("{SD15}").then(|| sd15_configs(tmp.path()));
    let fill = |s: &str| {
        let mut s = s
            .replace("{ABLATIONS}", ABLATIONS)
            .replace("{SD_TINY}", SD_TINY)
            .replace("{DIR}", dir.to_str().unwrap());
        if let Some(p) = &sd15 {
            s = s.replace("{SD15}", p.to_str().unwrap());
        }
        s
    };
    for (name, text) in &case.files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, fill(text)).unwrap();
    }
    for (name, g) in &case.generated {
        std::fs::write(dir.join(name), g.bytes()).unwrap();
    }
    let before = snapshot(&dir);
    let args: Vec<String> = case.args.iter().map(|a| fill(a)).collect();
    // The default cache lies inside the case's temporary folder, never in the user's home.
    let home = tmp.path().join("home");
    let (code, text) = binary::run(
        binary::diffris()
            .current_dir(&dir)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .args(&args),
    );
    let fail = |why: String| Err(format!("{why}\n--- output ---\n{text}"));
    let Some(code) = code else {
        return fail("ended by a signal".into());
    };
    if text.contains("panicked") || code == 101 {
        return fail(format!("panicked (exit {code})"));
    }
    let (expected, refused) = match (&case.refused, &case.accepted) {
        (Some(r), None) => (r, true),
        (None, Some(a)) => (a, false),
        _ => return Err("give exactly one of `refused` and `accepted`".into()),
    };
    if refused && code == 0 {
        return fail("exit 0 where a refusal was expected".into());
    }
    if !refused && code != 0 {
        return fail(format!("exit {code} where success was expected"));
    }
    for e in expected {
        if !text.contains(&fill(e)) {
            return fail(format!("no `{e}` in the output"));
        }
    }
    let after = snapshot(&dir);
    for (path, bytes) in &before {
        match after.get(path) {
            None => return fail(format!("{} was removed", path.display())),
            Some(now) if now != bytes => return fail(format!("{} was changed", path.display())),
            _ => {}
        }
    }
    if refused {
        let new: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
        if !new.is_empty() {
            return fail(format!("a refused input left {new:?}"));
        }
    }
    Ok(Some(()))
}

#[test]
fn every_input_of_the_corpus_ends_as_it_says() {
    let cases = load();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(&c.case), "case `{}` twice", c.case);
    }
    // A few cases at a time: each is a process of its own.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Result<Option<()>, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(case) = cases.get(i) else { break };
                        out.push((i, run_case(case)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut tally: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, r) in &results {
        let c = &cases[*i];
        let kind = if c.refused.is_some() {
            "refused"
        } else {
            "accepted"
        };
        match r {
            Ok(Some(())) => *tally.entry((c.class.as_str(), kind)).or_default() += 1,
            Ok(None) => *tally.entry((c.class.as_str(), "skipped")).or_default() += 1,
            Err(why) => failures.push(format!("case {i} `{}` ({}): {why}", c.case, c.class)),
        }
    }
    println!(
        "bad-input corpus: {} cases, {} failed",
        cases.len(),
        failures.len()
    );
    for ((class, kind), n) in &tally {
        println!("  {class:9} {kind:9} {n}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
