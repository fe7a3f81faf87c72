//! `diffris explain --run DIR (--image X --text "..." | --split S --index N) --out DIR`: what a
//! trained model reads from one image and expression (see [`crate::explain`]).

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;
use crate::explain::flow::Request;

/// Arguments of `diffris explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// A finished run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// An image to explain (with --text).
    #[arg(long, requires = "text", conflicts_with_all = ["split", "index"])]
    pub image: Option<PathBuf>,
    /// The referring expression (with --image).
    #[arg(long, requires = "image")]
    pub text: Option<String>,
    /// A split of the run's dataset (with --index): its sample's image, expression and ground
    /// truth.
    #[arg(long, requires = "index")]
    pub split: Option<String>,
    /// The sample's index in --split.
    #[arg(long, requires = "split")]
    pub index: Option<usize>,
    /// Output directory (gets explain.png, explain.json, attributions.csv and the panels).
    #[arg(long)]
    pub out: PathBuf,
    /// Points on the integrated-gradient path (midpoint rule).
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Samples per pass (path points, deleted words); default: the run's pass size, at most
    /// 4 (each path point holds a training pass's activations: about 3.4 GiB at 512 px on the
    /// CPU backend).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Width of one panel in pixels.
    #[arg(long, default_value_t = 128,
          value_parser = super::bounds::within(super::bounds::PANEL.0, super::bounds::PANEL.1))]
    pub panel: u32,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: ExplainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(args.batch != Some(0), "--batch must be at least 1");
    anyhow::ensure!(args.panel >= 16, "--panel must be at least 16 pixels");
    // clap ties --image to --text and --split to --index; one of the two pairs is needed.
    anyhow::ensure!(
        args.image.is_some() || args.split.is_some(),
        "give an input: --image FILE --text \"...\", or --split NAME --index N"
    );
    if let Some(text) = &args.text {
        anyhow::ensure!(
            !text.trim().is_empty(),
            "--text is empty: give the expression that refers to the object"
        );
    }
    let request = Request {
        run: args.run,
        image: args.image,
        text: args.text,
        split: args.split,
        index: args.index,
        out: args.out,
        steps: args.steps,
        batch: args.batch,
        panel: args.panel,
        cache: args.cache,
    };
    crate::explain::flow::run(device, request)
}
