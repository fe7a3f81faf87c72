//! `diffris tokenize "TEXT"`: the ids the text encoder will see, for debugging prompts.

use std::path::PathBuf;

use anyhow::Context;
use diffris_data::ClipTokenizer;

/// Arguments of `diffris tokenize`.
#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// The expression to tokenise.
    pub text: String,
    /// A diffusers model folder whose `tokenizer/{vocab.json,merges.txt}` to use instead of the
    /// embedded CLIP vocabulary.
    #[arg(long)]
    pub sd: Option<PathBuf>,
}

/// Prints the 77 ids, the end-token index and whether the text was truncated.
pub fn run(args: &TokenizeArgs) -> anyhow::Result<()> {
    let tokenizer = match &args.sd {
        Some(dir) => ClipTokenizer::from_diffusers_dir(dir)
            .with_context(|| format!("loading the tokenizer of {}", dir.display()))?,
        None => ClipTokenizer::embedded()?,
    };
    let t = tokenizer.encode(&args.text)?;
    let ids: Vec<String> = t.ids.iter().map(u32::to_string).collect();
    println!("ids       {}", ids.join(" "));
    println!("eos_index {}", t.eos_index);
    println!("tokens    {} (of at most 75)", t.eos_index - 1);
    if t.truncated {
        println!("truncated yes: the text is longer than 75 tokens");
    }
    Ok(())
}
