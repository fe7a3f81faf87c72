//! `diffris eval --run DIR`: evaluates a finished run on a split, with either protocol, writes
//! each sample's score to `DIR/per_sample-SPLIT-PROTOCOL.csv`, and optionally saves its
//! predicted masks (for `diffris score` or other tools).

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;
use crate::eval::metrics::Protocol;

/// Arguments of `diffris eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A finished run directory (`results/runs/ABLATION/VARIANT/seed-N`).
    #[arg(long)]
    pub run: PathBuf,
    /// Split to evaluate (default: the run's test split).
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Write the predicted masks as `NNNNNN.png` (sample order of the split) into this directory.
    #[arg(long)]
    pub save_masks: Option<PathBuf>,
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Evaluate the first N samples of the split (default: as many as the run's own
    /// evaluation read, i.e. its `--limit-eval`, else all).
    #[arg(long,
          value_parser = super::bounds::within(super::bounds::EVAL_LIMIT.0, super::bounds::EVAL_LIMIT.1))]
    pub limit: Option<usize>,
    /// A field of the run's model config for this evaluation: `--set
    /// model.decoder.gumbel_at_eval=true`, `--set model.decoder.logits_align_corners=true`
    /// (repeatable; `model.` fields only; fields that hold weights must keep the trained
    /// shapes). The scores then go to `per_sample-SPLIT-PROTOCOL-set-HASH.csv`, beside a
    /// `.set` file listing the settings, and the run's own files are left as they are.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<crate::config::recipe::set::FieldSet>,
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: EvalArgs) -> anyhow::Result<()> {
    crate::runner::evaluate_run::run(
        device,
        crate::runner::evaluate_run::Request {
            run: args.run,
            split: args.split,
            protocol: args.protocol,
            save_masks: args.save_masks,
            cache: args.cache,
            limit: args.limit,
            sets: args.set,
        },
    )
}
