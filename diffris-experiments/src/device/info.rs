//! `diffris info`: where and what this binary runs, as text: the build, the compiled backends
//! and kernels, the device (after one small computation on it), and optionally the parameter
//! counts of the model around an SD architecture.

use burn::tensor::{ElementConversion, Tensor};
use diffris_model::diffris::{DiffRisConfig, parameter_counts};
use diffris_model::sd::SdConfig;

use crate::device::backend::{
    BackendJob, DeviceBackend, DeviceSpec, RunTarget, compiled_backends, dispatch,
};
use crate::util::build_info::{BURN_VERSION, CRATE_VERSION, GIT_REVISION};

/// What `diffris info` was asked (its arguments).
pub struct Request {
    /// The SD architecture (`sd15`, `tiny`) whose model's parameters to count, if any.
    pub model: Option<String>,
}

struct Info(Request);

impl BackendJob for Info {
    type Output = anyhow::Result<String>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> Self::Output {
        // One tiny computation proves the device actually works.
        let x = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
        let sum: f32 = x.sum().into_scalar().elem();
        anyhow::ensure!(sum == 6.0, "the device computed 1+2+3 = {sum}");
        let mut text = format!(
            "diffris      {CRATE_VERSION}\n\
             git revision {GIT_REVISION}\n\
             burn         {BURN_VERSION}\n\
             backends     {}\n\
             kernels      {}\n\
             device       {} ({})\n\
             backend      {}",
            compiled_backends()
                .iter()
                .map(|b| b.feature())
                .collect::<Vec<_>>()
                .join(", "),
            compiled_backends()
                .iter()
                .map(|b| format!("{}: {}", b.feature(), b.kernels()))
                .collect::<Vec<_>>()
                .join("; "),
            target.spec,
            target.device_debug,
            target.backend_name,
        );
        if let Some(name) = &self.0.model {
            let sd = SdConfig::preset(name)
                .ok_or_else(|| anyhow::anyhow!("unknown --model `{name}` (sd15 or tiny)"))?;
            let counts = parameter_counts::<B>(&DiffRisConfig::default(), &sd, &device);
            text.push_str(&format!(
                "\n\nparameters of DiffRIS around {name} (paper defaults):\n"
            ));
            for c in &counts {
                let kind = if c.trainable { "trainable" } else { "frozen" };
                text.push_str(&format!(
                    "  {:<18} {:>9} {:>14}\n",
                    c.name,
                    kind,
                    group(c.count)
                ));
            }
            let sum = |t: bool| {
                counts
                    .iter()
                    .filter(|c| c.trainable == t)
                    .map(|c| c.count)
                    .sum()
            };
            text.push_str(&format!(
                "  {:<18} {:>9} {:>14}\n",
                "total",
                "trainable",
                group(sum(true))
            ));
            text.push_str(&format!(
                "  {:<18} {:>9} {:>14}",
                "total",
                "frozen",
                group(sum(false))
            ));
        }
        Ok(text)
    }
}

/// `1234567` -> `1,234,567`.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary of this build on `device`.
pub fn describe(device: DeviceSpec, request: Request) -> anyhow::Result<String> {
    dispatch(device, Info(request))?
}
