//! Records the git revision and the Burn version this binary is built from, and a digest of the
//! sources that decide what the frozen encoders compute (the key of the encoded-split cache).

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest)
        .parent()
        .expect("crate lives in the workspace");
    for watched in [".git/HEAD", ".git/index", ".git/refs", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!(
        "cargo:rustc-env=DIFFRIS_GIT_REVISION={}",
        git_revision(root)
    );
    println!(
        "cargo:rustc-env=DIFFRIS_BURN_VERSION={}",
        burn_version(root)
    );
    // Cargo rescans a watched directory for any changed file.
    let encoder_sources = ENCODER_SOURCES.map(|p| root.join(p));
    for path in &encoder_sources {
        // A path that moved would silently drop out of the digest (read as empty).
        assert!(
            path.exists(),
            "{} is in ENCODER_SOURCES but does not exist: update build.rs to where it moved",
            path.display()
        );
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!(
        "cargo:rustc-env=DIFFRIS_ENCODER_SOURCES={:016x}",
        digest(root, &encoder_sources)
    );
}

/// What the encoded splits depend on besides their configuration: the model code (the frozen
/// SD stack and its kernels), the data code (image decoding and resizing), the encoding step
/// itself, and every dependency's version.
const ENCODER_SOURCES: [&str; 5] = [
    "diffris-kernels/src",
    "diffris-model/src",
    "diffris-data/src",
    "diffris-experiments/src/inputs/encode.rs",
    "Cargo.lock",
];

/// 64-bit FNV-1a over every file under `paths` (in sorted order): its path relative to `root`,
/// a zero byte, its bytes, a zero byte.
fn digest(root: &Path, paths: &[std::path::PathBuf]) -> u64 {
    fn files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        match std::fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    files(&entry.path(), out);
                }
            }
            Err(_) => out.push(path.to_path_buf()),
        }
    }
    let mut all = Vec::new();
    for path in paths {
        files(path, &mut all);
    }
    all.sort();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    };
    for file in all {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        feed(relative.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&std::fs::read(&file).unwrap_or_default());
        feed(&[0]);
    }
    h
}

fn git_revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-dirty") } else { rev }
        }
        None => "unknown".to_string(),
    }
}

/// The `burn` version Cargo.lock resolved (the workspace pins it exactly).
fn burn_version(root: &Path) -> String {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"burn\""
            && let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return v.trim_end_matches('"').to_string();
        }
    }
    "unknown".to_string()
}
