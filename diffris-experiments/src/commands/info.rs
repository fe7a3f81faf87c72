//! `diffris info`: where and what this binary runs.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use crate::backend::{BackendJob, DeviceSpec, RunTarget, compiled_backends, dispatch};
use crate::build_info::{BURN_VERSION, CRATE_VERSION, GIT_REVISION};

struct Info;

impl BackendJob for Info {
    type Output = anyhow::Result<String>;

    fn run<B: Backend>(self, device: B::Device, target: RunTarget) -> Self::Output {
        // One tiny computation proves the device actually works.
        let x = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
        let sum: f32 = x.sum().into_scalar().elem();
        anyhow::ensure!(sum == 6.0, "the device computed 1+2+3 = {sum}");
        Ok(format!(
            "diffris      {CRATE_VERSION}\n\
             git revision {GIT_REVISION}\n\
             burn         {BURN_VERSION}\n\
             backends     {}\n\
             device       {} ({})\n\
             backend      {}",
            compiled_backends()
                .iter()
                .map(|b| b.feature())
                .collect::<Vec<_>>()
                .join(", "),
            target.spec,
            target.device_debug,
            target.backend_name,
        ))
    }
}

/// Prints the build and device summary.
pub fn run(device: DeviceSpec) -> anyhow::Result<()> {
    println!("{}", dispatch(device, Info)??);
    Ok(())
}
