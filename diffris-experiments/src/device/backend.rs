//! Which Burn backends are compiled in (cargo features) and which device runs (`--device`).
//!
//! Every command is written once, generic over `B: SdBackend`, as a [`BackendJob`]; [`dispatch`]
//! monomorphises it for each compiled-in backend and runs the one the device names. Without a
//! `--device` flag the first compiled-in backend of [`DEFAULT_ORDER`] runs: accelerators first,
//! the CPU backend last, so `--features cuda` alone is enough to train on a GPU.

use diffris_kernels::SdBackend;
use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::{DeviceId, DeviceOps};

#[cfg(not(any(feature = "flex", feature = "cuda", feature = "wgpu", feature = "tch")))]
compile_error!(
    "diffris-experiments needs at least one backend: build with `--features flex` (CPU, the \
     default), `--features cuda`, `--features wgpu` or `--features tch`"
);

// Burn's distributed data parallel needs `DistributedBackend`, which of our backends only
// cubecl's CUDA runtime implements (its collectives are NCCL's); see [`DataParallelBackend`].
#[cfg(all(
    feature = "ddp",
    any(feature = "flex", feature = "tch", feature = "wgpu")
))]
compile_error!(
    "the `ddp` feature builds with the cuda backend alone: \
     `--no-default-features --features cuda,ddp` (Burn 0.21 implements distributed training \
     for its CUDA runtime only)"
);

/// What a backend must be for diffris to train on it with Burn's distributed data parallel
/// (DDP): Burn's `DistributedBackend` in builds with the `ddp` feature, any backend otherwise.
///
/// Burn 0.21 makes `Autodiff<B>` an autodiff backend only for `B: DistributedBackend` once its
/// `distributed` feature is on, so in a `ddp` build every backend that trains must be one; of
/// the backends diffris compiles in, only cubecl's (CUDA) implements it.
#[cfg(feature = "ddp")]
pub trait DataParallelBackend: burn::tensor::backend::distributed::DistributedBackend {}
#[cfg(feature = "ddp")]
impl<B: burn::tensor::backend::distributed::DistributedBackend> DataParallelBackend for B {}
/// What a backend must be for diffris to train on it with Burn's distributed data parallel
/// (DDP): Burn's `DistributedBackend` in builds with the `ddp` feature, any backend otherwise.
#[cfg(not(feature = "ddp"))]
pub trait DataParallelBackend: burn::tensor::backend::Backend {}
#[cfg(not(feature = "ddp"))]
impl<B: burn::tensor::backend::Backend> DataParallelBackend for B {}

/// What a command runs on: a backend with the SD stack's operations ([`SdBackend`]) that can
/// also train under this build's data parallelism ([`DataParallelBackend`]).
pub trait DeviceBackend: SdBackend + DataParallelBackend {}

impl<B: SdBackend + DataParallelBackend> DeviceBackend for B {}

/// Backends in the order the default device is chosen from.
pub const DEFAULT_ORDER: [BackendKind; 4] = [
    BackendKind::Cuda,
    BackendKind::Wgpu,
    BackendKind::Tch,
    BackendKind::Flex,
];

/// A backend diffris can be built with; each is a cargo feature of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Flex,
    Cuda,
    Wgpu,
    Tch,
}

impl BackendKind {
    /// The cargo feature (and `--device` prefix) of this backend.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Tch => "tch",
        }
    }

    /// The kernels this backend runs in diffris builds, as `diffris info` prints them: the
    /// `cuda` feature builds Burn's cubecl backend with `autotune` and `fusion` (`.ci/run`
    /// checks with `cargo tree` that they reach burn-cubecl); `wgpu` without (its autotuning
    /// made CI's lavapipe tests run for over 20 minutes).
    pub fn kernels(self) -> &'static str {
        match self {
            Self::Flex => "Burn's flex with diffris's CPU kernels (attention, convolutions, norms)",
            Self::Cuda => "autotune, fusion",
            Self::Wgpu => "cubecl's untuned defaults (no autotune, no fusion)",
            Self::Tch => "libtorch's (cuDNN and scaled-dot-product attention on CUDA)",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Tch => cfg!(feature = "tch"),
        }
    }
}

/// The backends this binary was built with, in [`DEFAULT_ORDER`].
pub fn compiled_backends() -> Vec<BackendKind> {
    DEFAULT_ORDER.into_iter().filter(|b| b.compiled()).collect()
}

/// A device as the `--device` flag names it: `flex`, `cuda`, `cuda:N`, `wgpu`, `tch`
/// (libtorch on the CPU) or `tch:cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Flex,
    Cuda(usize),
    Wgpu,
    TchCpu,
    TchCuda(usize),
}

impl DeviceSpec {
    /// The backend this device belongs to.
    pub fn kind(self) -> BackendKind {
        match self {
            Self::Flex => BackendKind::Flex,
            Self::Cuda(_) => BackendKind::Cuda,
            Self::Wgpu => BackendKind::Wgpu,
            Self::TchCpu | Self::TchCuda(_) => BackendKind::Tch,
        }
    }

    /// The default device: the first compiled-in backend of [`DEFAULT_ORDER`].
    pub fn default_compiled() -> Self {
        match compiled_backends().first() {
            Some(BackendKind::Cuda) => Self::Cuda(0),
            Some(BackendKind::Wgpu) => Self::Wgpu,
            Some(BackendKind::Tch) => Self::TchCpu,
            _ => Self::Flex,
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flex => write!(f, "flex"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Wgpu => write!(f, "wgpu"),
            Self::TchCpu => write!(f, "tch"),
            Self::TchCuda(i) => write!(f, "tch:cuda:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BackendError::BadDevice(s.to_string());
        let index = |i: &str| i.parse::<usize>().map_err(|_| bad());
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split(':').collect();
        match parts.as_slice() {
            ["flex"] => Ok(Self::Flex),
            ["cuda"] => Ok(Self::Cuda(0)),
            ["cuda", i] => Ok(Self::Cuda(index(i)?)),
            ["wgpu"] => Ok(Self::Wgpu),
            ["tch"] | ["tch", "cpu"] => Ok(Self::TchCpu),
            ["tch", "cuda"] => Ok(Self::TchCuda(0)),
            ["tch", "cuda", i] => Ok(Self::TchCuda(index(i)?)),
            _ => Err(bad()),
        }
    }
}

impl DeviceSpec {
    /// The device's index among its backend's devices (0 where there is one).
    pub fn index(self) -> usize {
        match self {
            Self::Cuda(i) | Self::TchCuda(i) => i,
            Self::Flex | Self::Wgpu | Self::TchCpu => 0,
        }
    }
}

/// The devices of a run as `--device` names them: one, or several of one backend separated by
/// commas (`cuda:0,cuda:1`), over which training shares each batch (data parallel).
///
/// Several devices must be CUDA GPUs (`cuda:N` or `tch:cuda:N`, each once), or `flex` repeated:
/// the CPU backend has one device, and `flex,flex` runs two workers on it, which is how the
/// multi-device path is tested without a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    specs: Vec<DeviceSpec>,
    parallel: DataParallel,
}

/// How several devices share each optimizer batch (`--data-parallel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DataParallel {
    /// burn-train's `MultiDevice` loop with each step's gradients summed in the epoch plan's
    /// order (`training::multi_device`): the same numbers as one device running the same
    /// micro-batches, on any backend. burn-train copies the model from the first device to the
    /// others for every pass.
    #[default]
    Ordered,
    /// Burn's distributed data parallel (`training::ddp`): every device keeps its own copy of
    /// the model and the gradients of each pass are summed over the devices by an all-reduce
    /// (NCCL). CUDA GPUs only, in a binary built with `--no-default-features --features
    /// cuda,ddp`; equal to `ordered` up to the all-reduce's order of summation.
    Ddp,
}

impl fmt::Display for DataParallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ordered => "ordered",
            Self::Ddp => "ddp",
        })
    }
}

impl DeviceList {
    pub fn one(spec: DeviceSpec) -> Self {
        Self {
            specs: vec![spec],
            parallel: DataParallel::Ordered,
        }
    }

    /// The list of a [`RunTarget`]'s devices (already checked when parsed).
    pub fn from_specs(specs: &[DeviceSpec]) -> Self {
        Self {
            specs: specs.to_vec(),
            parallel: DataParallel::Ordered,
        }
    }

    /// The same devices sharing batches the way `parallel` says, if they can: Burn's DDP needs
    /// several CUDA GPUs and a binary built with the `ddp` feature.
    pub fn sharing(mut self, parallel: DataParallel) -> Result<Self, BackendError> {
        if parallel == DataParallel::Ddp {
            let bad = |reason: String| BackendError::BadDeviceList {
                list: self.to_string(),
                reason,
            };
            if self.len() < 2 {
                return Err(bad(
                    "--data-parallel ddp shares batches over several devices; name them all, \
                     e.g. --device cuda:0,cuda:1"
                        .into(),
                ));
            }
            if !matches!(self.first(), DeviceSpec::Cuda(_)) {
                return Err(bad(
                    "--data-parallel ddp runs on cuda:N GPUs only (Burn 0.21 has collective \
                     operations for its CUDA runtime alone); `--data-parallel ordered` runs on \
                     every backend"
                        .into(),
                ));
            }
            if !cfg!(feature = "ddp") {
                return Err(bad(
                    "this binary was built without the `ddp` feature; rebuild with \
                     `--no-default-features --features cuda,ddp`"
                        .into(),
                ));
            }
        }
        self.parallel = parallel;
        Ok(self)
    }

    /// The first device: the one that runs everything but the training passes.
    pub fn first(&self) -> DeviceSpec {
        self.specs[0]
    }

    pub fn specs(&self) -> &[DeviceSpec] {
        &self.specs
    }

    pub fn parallel(&self) -> DataParallel {
        self.parallel
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.specs.iter().map(|d| d.to_string()).collect();
        write!(f, "{}", names.join(","))
    }
}

impl FromStr for DeviceList {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let specs = s
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<DeviceSpec>, _>>()?;
        let bad = |reason: String| BackendError::BadDeviceList {
            list: s.to_string(),
            reason,
        };
        if specs.len() > 1 {
            let first = specs[0];
            if let Some(other) = specs.iter().find(|d| d.kind() != first.kind()) {
                return Err(bad(format!(
                    "`{first}` and `{other}` are different backends; a run's devices share one"
                )));
            }
            if !matches!(
                first,
                DeviceSpec::Flex | DeviceSpec::Cuda(_) | DeviceSpec::TchCuda(_)
            ) {
                return Err(bad(format!(
                    "several devices must be cuda:N or tch:cuda:N GPUs (or flex repeated, to test \
                     the multi-device path on the CPU); `{first}` has one device"
                )));
            }
            if first != DeviceSpec::Flex {
                for (i, d) in specs.iter().enumerate() {
                    if specs[..i].contains(d) {
                        return Err(bad(format!("`{d}` is named twice")));
                    }
                }
            }
        }
        Ok(Self::from_specs(&specs))
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown device `{0}`: expected flex, cuda, cuda:N, wgpu, tch, tch:cpu or tch:cuda:N")]
    BadDevice(String),
    #[error(
        "device `{device}` needs the `{feature}` backend, which this binary was built without; \
         rebuild with `--features {feature}` (compiled in: {compiled})"
    )]
    NotCompiled {
        device: String,
        feature: &'static str,
        compiled: String,
    },
    #[error("device `{device}`: {reason}")]
    Unavailable { device: String, reason: String },
    #[error("--device {list}: {reason}")]
    BadDeviceList { list: String, reason: String },
}

/// What a job learns about where it runs.
#[derive(Clone, Debug)]
pub struct RunTarget {
    /// The device as the user names it (`cuda:0`).
    pub spec: DeviceSpec,
    /// Burn's name for the backend (`B::name(&device)`).
    pub backend_name: String,
    /// Burn's debug form of the device.
    pub device_debug: String,
    /// What draws random SD weights here ([`weights_generator`]).
    pub weights_generator: String,
    /// Every device of the run (the first is `spec`).
    pub devices: Vec<DeviceSpec>,
    /// How several devices share each batch.
    pub parallel: DataParallel,
    /// Why the named device could not be used, when a job that only plans
    /// ([`BackendJob::plans_only`]) runs without it, on the CPU backend: a `--dry-run` for a GPU
    /// on a machine without its driver.
    pub planned_without: Option<String>,
}

impl RunTarget {
    /// Burn's devices of the run, the first being `main` (the device a job was given).
    pub fn burn_devices<D: DeviceOps>(&self, main: &D) -> Vec<D> {
        let type_id = main.to_id().type_id;
        let mut out = vec![main.clone()];
        for spec in self.devices.iter().skip(1) {
            out.push(D::from_id(DeviceId::new(type_id, spec.index() as u16)));
        }
        out
    }
}

/// A command written once for every backend.
pub trait BackendJob {
    type Output;
    /// Runs on backend `B` (the plain backend; training wraps it in `Autodiff<B>`).
    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> Self::Output;

    /// Whether the job only plans (computes nothing on the device): such a job may run on the
    /// CPU backend when the device it names cannot be used here, with
    /// [`RunTarget::planned_without`] saying why.
    fn plans_only(&self) -> bool {
        false
    }
}

/// Runs `job` on the device `spec` names, or explains why it cannot.
pub fn dispatch<J: BackendJob>(spec: DeviceSpec, job: J) -> Result<J::Output, BackendError> {
    dispatch_on(&DeviceList::one(spec), job)
}

/// Runs `job` on the first of `devices` (the job finds all of them in its [`RunTarget`]), or
/// explains why it cannot.
pub fn dispatch_on<J: BackendJob>(devices: &DeviceList, job: J) -> Result<J::Output, BackendError> {
    let spec = devices.first();
    let kind = spec.kind();
    if !kind.compiled() {
        return Err(BackendError::NotCompiled {
            device: spec.to_string(),
            feature: kind.feature(),
            compiled: compiled_backends()
                .iter()
                .map(|b| b.feature())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    match spec {
        #[cfg(feature = "flex")]
        DeviceSpec::Flex => Ok(run_on::<burn::backend::Flex, J>(
            devices,
            burn::backend::flex::FlexDevice,
            job,
        )),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => {
            for d in devices.specs() {
                if let Err(reason) = cuda_check::usable(d.index()) {
                    // A plan needs no GPU: parameter counts and memory figures are the same on
                    // the CPU backend (the device's memory is then unknown unless set).
                    #[cfg(feature = "flex")]
                    if job.plans_only() {
                        return Ok(run_on_with::<burn::backend::Flex, J>(
                            devices,
                            burn::backend::flex::FlexDevice,
                            job,
                            Some(format!("{d} cannot be used here ({reason})")),
                        ));
                    }
                    return Err(BackendError::Unavailable {
                        device: d.to_string(),
                        reason,
                    });
                }
            }
            Ok(run_on::<burn::backend::Cuda, J>(
                devices,
                burn::backend::cuda::CudaDevice { index },
                job,
            ))
        }
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu => Ok(run_on::<burn::backend::Wgpu, J>(
            devices,
            burn::backend::wgpu::WgpuDevice::DefaultDevice,
            job,
        )),
        #[cfg(feature = "tch")]
        DeviceSpec::TchCpu => Ok(run_on::<burn::backend::LibTorch, J>(
            devices,
            burn::backend::libtorch::LibTorchDevice::Cpu,
            job,
        )),
        #[cfg(feature = "tch")]
        DeviceSpec::TchCuda(i) => Ok(run_on::<burn::backend::LibTorch, J>(
            devices,
            burn::backend::libtorch::LibTorchDevice::Cuda(i),
            job,
        )),
        #[allow(unreachable_patterns)]
        _ => unreachable!("compiled() was checked above"),
    }
}

fn run_on<B: DeviceBackend, J: BackendJob>(
    devices: &DeviceList,
    device: B::Device,
    job: J,
) -> J::Output {
    run_on_with::<B, J>(devices, device, job, None)
}

fn run_on_with<B: DeviceBackend, J: BackendJob>(
    devices: &DeviceList,
    device: B::Device,
    job: J,
    planned_without: Option<String>,
) -> J::Output {
    let target = RunTarget {
        spec: devices.first(),
        backend_name: B::name(&device),
        device_debug: format!("{device:?}"),
        weights_generator: weights_generator::<B>(&device),
        devices: devices.specs().to_vec(),
        parallel: devices.parallel(),
        planned_without,
    };
    job.run::<B>(device, target)
}

/// Burn's CUDA backend loads the driver lazily and panics in a worker thread when it is missing;
/// this asks the driver first so the user gets an error instead.
#[cfg(feature = "cuda")]
pub(crate) mod cuda_check {
    use std::os::raw::c_int;

    type CuInit = unsafe extern "C" fn(flags: u32) -> c_int;
    type CuDeviceGetCount = unsafe extern "C" fn(count: *mut c_int) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(device: *mut c_int, ordinal: c_int) -> c_int;
    type CuDeviceTotalMem = unsafe extern "C" fn(bytes: *mut usize, device: c_int) -> c_int;
    type CuDriverGetVersion = unsafe extern "C" fn(version: *mut c_int) -> c_int;

    /// The CUDA version cubecl's driver bindings were generated for, e.g. `13.4`: fixed when the
    /// binary is built, by `CUDARC_CUDA_VERSION` (e.g. `12080`), else by the `nvcc` found then,
    /// else the newest cudarc knows.
    pub fn bindings_version() -> String {
        let v = cudarc::driver::sys::CUDA_VERSION;
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    }

    /// The newest CUDA version the installed driver supports (`cuDriverGetVersion`), e.g.
    /// `13.0`.
    pub fn driver_version() -> Result<String, String> {
        let lib = driver()?;
        // SAFETY: the symbol has the signature of the CUDA driver API.
        unsafe {
            let get: libloading::Symbol<CuDriverGetVersion> = lib
                .get(b"cuDriverGetVersion\0")
                .map_err(|e| e.to_string())?;
            let mut v: c_int = 0;
            let code = get(&mut v);
            if code != 0 {
                return Err(format!("cuDriverGetVersion failed (CUresult {code})"));
            }
            Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
        }
    }

    /// The system's CUDA driver, initialised.
    fn driver() -> Result<libloading::Library, String> {
        let lib = ["libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib"]
            .iter()
            // SAFETY: loading the system CUDA driver runs only its initialisers.
            .find_map(|name| unsafe { libloading::Library::new(name) }.ok())
            .ok_or_else(|| {
                "no CUDA driver found (libcuda.so.1); install the NVIDIA driver or pick \
                 another device with --device"
                    .to_string()
            })?;
        // SAFETY: `cuInit` has this signature in the CUDA driver API.
        let code = unsafe {
            let init: libloading::Symbol<CuInit> =
                lib.get(b"cuInit\0").map_err(|e| e.to_string())?;
            init(0)
        };
        if code != 0 {
            return Err(format!(
                "the CUDA driver failed to initialise (CUresult {code}); is a GPU visible?"
            ));
        }
        Ok(lib)
    }

    pub fn usable(index: usize) -> Result<(), String> {
        let lib = driver()?;
        // SAFETY: the symbol has the signature of the CUDA driver API.
        unsafe {
            let count_fn: libloading::Symbol<CuDeviceGetCount> =
                lib.get(b"cuDeviceGetCount\0").map_err(|e| e.to_string())?;
            let mut count: c_int = 0;
            let code = count_fn(&mut count);
            if code != 0 {
                return Err(format!("cuDeviceGetCount failed (CUresult {code})"));
            }
            if index >= count as usize {
                return Err(format!(
                    "there are {count} CUDA device(s); index {index} is out of range"
                ));
            }
        }
        Ok(())
    }

    /// The total memory of CUDA device `index`, in bytes (no context is created).
    pub fn total_memory(index: usize) -> Result<u64, String> {
        let lib = driver()?;
        // SAFETY: the symbols have the signatures of the CUDA driver API (`_v2`: 64-bit sizes).
        unsafe {
            let get: libloading::Symbol<CuDeviceGet> =
                lib.get(b"cuDeviceGet\0").map_err(|e| e.to_string())?;
            let total: libloading::Symbol<CuDeviceTotalMem> = lib
                .get(b"cuDeviceTotalMem_v2\0")
                .map_err(|e| e.to_string())?;
            let mut device: c_int = 0;
            let code = get(&mut device, index as c_int);
            if code != 0 {
                return Err(format!("cuDeviceGet({index}) failed (CUresult {code})"));
            }
            let mut bytes: usize = 0;
            let code = total(&mut bytes, device);
            if code != 0 {
                return Err(format!("cuDeviceTotalMem failed (CUresult {code})"));
            }
            Ok(bytes as u64)
        }
    }
}

/// Version of what [`write_random`](crate::inputs::frozen::write_random) writes for an architecture and seed; part of the cache
/// folder's name, so weights written by a build that drew them otherwise are never reused.
/// Bump it whenever the weights for a seed change (the snapshot test of the tiny weights,
/// `random_weights_of_a_seed_are_those_of_this_version`, fails then).
pub const RANDOM_WEIGHTS_VERSION: u32 = 1;

/// What draws a run's random weights: the backend's name, the kind of device (Burn's backends
/// each have their own generator, and libtorch one per device type) and
/// [`RANDOM_WEIGHTS_VERSION`], e.g. `flex-Cpu-v1`. Runs record it (`env.json`), so a trained
/// or resumed run finds the weights it started with, also after the version changes.
pub fn weights_generator<B: SdBackend>(device: &B::Device) -> String {
    let debug = format!("{device:?}");
    let kind = debug
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    let name = format!("{}-{kind}", B::name(device));
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{name}-v{RANDOM_WEIGHTS_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_device_form() {
        assert_eq!("flex".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("CUDA:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu);
        assert_eq!("tch".parse::<DeviceSpec>().unwrap(), DeviceSpec::TchCpu);
        assert_eq!(
            "tch:cuda:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::TchCuda(1)
        );
        for bad in ["", "gpu", "cuda:x", "cuda:1:2", "flex:0"] {
            assert!(
                bad.parse::<DeviceSpec>().is_err(),
                "{bad:?} should not parse"
            );
        }
        for spec in [
            DeviceSpec::Cuda(2),
            DeviceSpec::TchCuda(1),
            DeviceSpec::Flex,
        ] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn parses_device_lists_and_refuses_mixed_or_repeated_gpus() {
        let list: DeviceList = "cuda:0,cuda:1".parse().unwrap();
        assert_eq!(list.specs(), [DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]);
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        assert_eq!("flex".parse::<DeviceList>().unwrap().len(), 1);
        assert_eq!("flex,flex".parse::<DeviceList>().unwrap().len(), 2);
        for (bad, says) in [
            ("cuda:0,flex", "different backends"),
            ("cuda:1,cuda:1", "named twice"),
            ("wgpu,wgpu", "one device"),
            ("tch,tch", "one device"),
            ("cuda:0,", "unknown device"),
        ] {
            let msg = bad.parse::<DeviceList>().unwrap_err().to_string();
            assert!(msg.contains(says), "{bad}: {msg}");
        }
    }

    /// `ddp` needs several CUDA GPUs and the `ddp` build; `ordered` takes any list.
    #[test]
    fn ddp_is_refused_where_burn_cannot_run_it() {
        for list in [
            "flex",
            "flex,flex",
            "cuda:0",
            "wgpu",
            "tch:cuda:0,tch:cuda:1",
        ] {
            let devices: DeviceList = list.parse().unwrap();
            let ordered = devices.clone().sharing(DataParallel::Ordered).unwrap();
            assert_eq!(ordered.parallel(), DataParallel::Ordered);
            let msg = devices.sharing(DataParallel::Ddp).unwrap_err().to_string();
            let says = if list.contains(',') {
                "cuda:N GPUs only"
            } else {
                "several devices"
            };
            assert!(msg.contains(says), "{list}: {msg}");
        }
        let gpus: DeviceList = "cuda:0,cuda:1".parse().unwrap();
        let shared = gpus.sharing(DataParallel::Ddp);
        if cfg!(feature = "ddp") {
            assert_eq!(shared.unwrap().parallel(), DataParallel::Ddp);
        } else {
            let msg = shared.unwrap_err().to_string();
            assert!(msg.contains("--features cuda,ddp"), "{msg}");
        }
    }

    #[test]
    fn a_targets_burn_devices_follow_its_list() {
        let target = RunTarget {
            spec: DeviceSpec::Cuda(2),
            backend_name: String::new(),
            device_debug: String::new(),
            weights_generator: String::new(),
            devices: vec![
                DeviceSpec::Cuda(2),
                DeviceSpec::Cuda(0),
                DeviceSpec::Cuda(5),
            ],
            parallel: DataParallel::Ordered,
            planned_without: None,
        };
        // A stand-in device type with an index, as CUDA's.
        #[derive(Clone, Debug, Default, PartialEq)]
        struct Gpu(u16);
        impl burn::tensor::backend::Device for Gpu {
            fn from_id(id: DeviceId) -> Self {
                Gpu(id.index_id)
            }
            fn to_id(&self) -> DeviceId {
                DeviceId::new(0, self.0)
            }
        }
        impl DeviceOps for Gpu {}
        assert_eq!(target.burn_devices(&Gpu(2)), [Gpu(2), Gpu(0), Gpu(5)]);
    }

    struct Name;
    impl BackendJob for Name {
        type Output = String;
        fn run<B: DeviceBackend>(self, _device: B::Device, target: RunTarget) -> String {
            target.backend_name
        }
    }

    #[test]
    fn missing_backend_names_the_feature() {
        let absent = DEFAULT_ORDER.into_iter().find(|b| !b.compiled());
        if let Some(kind) = absent {
            let spec = match kind {
                BackendKind::Flex => DeviceSpec::Flex,
                BackendKind::Cuda => DeviceSpec::Cuda(0),
                BackendKind::Wgpu => DeviceSpec::Wgpu,
                BackendKind::Tch => DeviceSpec::TchCpu,
            };
            let msg = dispatch(spec, Name).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("--features {}", kind.feature())),
                "{msg}"
            );
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_runs_a_job() {
        let name = dispatch(DeviceSpec::Flex, Name).unwrap();
        assert!(name.to_lowercase().contains("flex"), "{name}");
    }
}
