//! The manual's commands exist: every `diffris ...` and `cargo run ... -- ...` line of the `sh`
//! blocks of README.md and docs/GUIDE.md parses with the binary's own argument parser (flags,
//! subcommands and typed values such as `--device cuda:0,cuda:1` or `--set PATH=VALUE`), so a
//! renamed or removed flag fails here rather than in a reader's shell.

use clap::Parser;
use diffris_experiments::cli::Cli;

/// Shell words of `line`: split at blanks outside quotes, quotes removed.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

/// The diffris argument lists of the `sh` blocks of `markdown` (continuation lines joined;
/// environment assignments and comments skipped).
fn commands(markdown: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = trimmed == "```sh";
            continue;
        }
        if !in_sh || trimmed.starts_with('#') {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let full = format!("{pending}{trimmed}");
        pending.clear();
        let mut w: Vec<String> = words(&full)
            .into_iter()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .collect();
        let args = match w.first().map(String::as_str) {
            Some("cargo") if w.get(1).map(String::as_str) == Some("run") => {
                match w.iter().position(|x| x == "--") {
                    Some(i) => w.split_off(i + 1),
                    None => continue,
                }
            }
            Some(bin) if bin == "diffris" || bin.ends_with("/diffris") => w.split_off(1),
            _ => continue,
        };
        out.push(args);
    }
    out
}

fn check(file: &str, at_least: usize) {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let found = commands(&text);
    assert!(
        found.len() >= at_least,
        "{file}: {} diffris commands found, expected at least {at_least}",
        found.len()
    );
    for args in found {
        let argv = std::iter::once("diffris".to_string()).chain(args.iter().cloned());
        if let Err(e) = Cli::try_parse_from(argv) {
            panic!("{file}: `diffris {}` does not parse:\n{e}", args.join(" "));
        }
    }
}

#[test]
fn readme_commands_parse() {
    check("README.md", 4);
}

#[test]
fn guide_commands_parse() {
    check("docs/GUIDE.md", 8);
}

#[test]
fn shell_words_and_continuations() {
    assert_eq!(words(r#"a "b c" 'd' "" e"#), ["a", "b c", "d", "", "e"]);
    let md = "```sh\nX=1 cargo run -p p -- \\\n    ablation a --set \"m.x=(y: 1)\"\n# c\ndiffris info\ncargo build\n```\n";
    assert_eq!(
        commands(md),
        vec![vec!["ablation", "a", "--set", "m.x=(y: 1)"], vec!["info"]]
    );
    // A made-up flag is refused by the parser this test relies on.
    assert!(Cli::try_parse_from(["diffris", "ablation", "a", "--no-such-flag"]).is_err());
}
