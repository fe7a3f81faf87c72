//! Command-line interface of the `diffris` binary.

use clap::{Parser, Subcommand};

use crate::commands;
use crate::device::backend::{DataParallel, DeviceList, DeviceSpec};

/// DiffRIS: referring remote-sensing image segmentation on a frozen Stable Diffusion.
#[derive(Debug, Parser)]
#[command(name = "diffris", version, about)]
pub struct Cli {
    /// Device to run on: flex, cuda, cuda:N, wgpu, tch, tch:cuda:N. Default: the first
    /// compiled-in backend of cuda, wgpu, tch, flex. Training (train, ablation) takes several
    /// GPUs of one backend, comma-separated (cuda:0,cuda:1,...), and shares each batch over
    /// them; `flex,flex` runs two CPU workers.
    #[arg(long, global = true)]
    pub device: Option<DeviceList>,

    /// How several training devices share each batch: `ordered` (burn-train's multi-device
    /// loop, gradients summed in a fixed order: the numbers of one device, any backend) or
    /// `ddp` (Burn's distributed data parallel: a model copy per GPU, gradients summed by
    /// NCCL; cuda:N GPUs, in a binary built with `--no-default-features --features cuda,ddp`).
    #[arg(long, global = true, value_enum, default_value_t = DataParallel::Ordered)]
    pub data_parallel: DataParallel,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the backend, device, Burn version, crate version and git revision.
    Info(commands::info::InfoArgs),
    /// Check that a device trains DiffRIS: a tiny training step per decoder against the CPU
    /// backend (loss, gradients, time).
    Doctor(commands::doctor::DoctorArgs),
    /// Print the 77 CLIP token ids of a text and the index of its end token.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Run the frozen SD stack on one image and expression and save what it computes.
    Features(commands::features::FeaturesArgs),
    /// Write seeded random weights of an SD architecture as a diffusers-style folder.
    InitSd(commands::init_sd::InitSdArgs),
    /// Train an SD stack's UNet by latent diffusion on image-caption pairs (generative
    /// pre-training), or its VAE as a KL autoencoder; every segment is exported as SD weights
    /// the other commands load.
    Pretrain(commands::pretrain::PretrainArgs),
    /// Generate images from captions with a stack that has a VAE decoder (DDIM with
    /// classifier-free guidance), saved as one PNG grid.
    Sample(commands::sample::SampleArgs),
    /// Run every variant of an ablation file and write its table and plots.
    Ablation(commands::ablation::AblationArgs),
    /// Train one variant of an ablation file (one seed).
    Train(commands::train::TrainArgs),
    /// Evaluate a finished run on a split.
    Eval(commands::eval::EvalArgs),
    /// Segment one image with a finished run: writes the mask and an overlay.
    Segment(commands::segment::SegmentArgs),
    /// Draw the best, median and worst samples of a split with each run's prediction (the
    /// paper's qualitative figures).
    Figures(commands::figures::FiguresArgs),
    /// Show what a finished run reads from one image and expression: per-word cross-attention
    /// maps (with and without the CP-adapter), PCMRD's token assignments, word attributions
    /// (integrated gradients and deletion).
    Explain(commands::explain::ExplainArgs),
    /// Score saved masks of any method with the same metric code.
    Score(commands::score::ScoreArgs),
    /// Regenerate tables and plots from saved runs.
    Tables(commands::tables::TablesArgs),
    /// Inspect a dataset or write SynthRS.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Train and evaluate one run spec read from stdin (used by `ablation --jobs N`).
    #[command(hide = true)]
    RunSpec(commands::run_spec::RunSpecArgs),
}

impl Cli {
    /// The devices the user asked for, or the default one, sharing batches as asked.
    pub fn devices(&self) -> anyhow::Result<DeviceList> {
        Ok(self
            .device
            .clone()
            .unwrap_or_else(|| DeviceList::one(DeviceSpec::default_compiled()))
            .sharing(self.data_parallel)?)
    }

    /// The device of a command that runs on one.
    pub fn device(&self) -> anyhow::Result<DeviceSpec> {
        let devices = self.devices()?;
        anyhow::ensure!(
            devices.len() == 1,
            "--device {devices}: this command runs on one device; several devices are for \
             training (`train`, `ablation`)"
        );
        Ok(devices.first())
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let devices = cli.devices();
    let one = cli.device();
    match cli.command {
        Command::Info(args) => commands::info::run(one?, &args),
        Command::Doctor(args) => commands::doctor::run(one?, args),
        Command::Tokenize(args) => commands::tokenize::run(&args),
        Command::Features(args) => commands::features::run(one?, args),
        Command::InitSd(args) => commands::init_sd::run(one?, args),
        Command::Pretrain(args) => commands::pretrain::run(devices?, args),
        Command::Sample(args) => commands::sample::run(one?, args),
        Command::Ablation(args) => commands::ablation::run(devices?, args),
        Command::Train(args) => commands::train::run(devices?, args),
        Command::Eval(args) => commands::eval::run(one?, args),
        Command::Segment(args) => commands::segment::run(one?, args),
        Command::Figures(args) => commands::figures::run(one?, args),
        Command::Explain(args) => commands::explain::run(one?, args),
        Command::Score(args) => commands::score::run(args),
        Command::Tables(args) => commands::tables::run(args),
        Command::Data(cmd) => commands::data::run(cmd),
        Command::RunSpec(args) => commands::run_spec::run(devices?, args),
    }
}
