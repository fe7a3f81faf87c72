//! `diffris score --pred DIR --format F --root R --split S`: scores any method's saved masks
//! with the runner's metric code, under either protocol ([`crate::eval::score`] says what it
//! accepts).

use std::path::PathBuf;

use diffris_data::DatasetFormat;

use crate::eval::metrics::Protocol;
use crate::eval::score::Request;

/// Arguments of `diffris score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Directory of predicted masks `000000.png`, `000001.png`, ... in split order.
    #[arg(long)]
    pub pred: PathBuf,
    #[arg(long)]
    pub format: DatasetFormat,
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// lavt: at the network's input size (`--size`) against the nearest-resized ground truth;
    /// cgformer: at each ground truth's size.
    #[arg(long, value_enum, default_value_t = Protocol::Lavt)]
    pub protocol: Protocol,
    /// The network's input size the masks were predicted at, `HxW` or `N` (512 for the paper
    /// profile, 64 for the tiny one); needed by the lavt protocol.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not a size: expected HxW or N, e.g. 512x512");
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match dims.as_slice() {
        [n] if *n > 0 => Ok((*n, *n)),
        [h, w] if *h > 0 && *w > 0 => Ok((*h, *w)),
        _ => Err(bad()),
    }
}

/// Runs the command.
pub fn run(a: ScoreArgs) -> anyhow::Result<()> {
    let request = Request {
        pred: a.pred,
        format: a.format,
        root: a.root,
        split: a.split,
        protocol: a.protocol,
        size: a.size,
    };
    let summary = crate::eval::score::run(&request)?;
    println!(
        "{} {} ({})",
        request.format.name(),
        request.split,
        request.protocol.label()
    );
    println!("{}", summary.line("predictions"));
    Ok(())
}
