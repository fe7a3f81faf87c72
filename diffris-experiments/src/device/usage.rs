//! What a device's memory holds, where its backend says: the process heap for the CPU backend
//! (counted by [`crate::device::allocator`]), the memory pool of Burn's cubecl backends (wgpu, cuda).
//! Burn 0.21's `Backend` has no memory query of its own, and libtorch's is not exposed by it.

use crate::device::backend::DeviceSpec;

/// Bytes in a GiB.
pub const GIB: f64 = (1u64 << 30) as f64;

/// How much memory a device offers a run, where diffris can ask: the RAM available to the CPU
/// backend, a CUDA GPU's total memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    pub bytes: f64,
    /// What the figure is, for messages (`RAM available`, `GPU memory`).
    pub what: String,
}

/// A device's memory, as far as its backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceMemory {
    /// The CPU backend's tensors live on the process heap: bytes allocated now, and the most
    /// allocated at once since [`crate::device::allocator::reset_peak`].
    Heap { live: u64, peak: u64 },
    /// cubecl's pool on the device: bytes held by live tensors, and bytes reserved from the
    /// driver (what the device has lent this process).
    Pool { in_use: u64, reserved: u64 },
}

impl DeviceMemory {
    /// The figure `doctor` prints: the heap's peak, or the pool's reservation, in MiB.
    pub fn mib(&self) -> f64 {
        let b = match *self {
            Self::Heap { peak, .. } => peak,
            Self::Pool { reserved, .. } => reserved,
        };
        b as f64 / (1u64 << 20) as f64
    }

    /// What [`Self::mib`] counts.
    pub fn meaning(&self) -> &'static str {
        match self {
            Self::Heap { .. } => "peak of the process heap during the device's step",
            Self::Pool { .. } => "device memory reserved by the backend's pool after the step",
        }
    }
}

/// The memory of `device` now, or `None` where its backend does not say.
pub fn query(device: DeviceSpec) -> Option<DeviceMemory> {
    match device {
        DeviceSpec::Flex => Some(DeviceMemory::Heap {
            live: crate::device::allocator::live_bytes() as u64,
            peak: crate::device::allocator::peak_bytes() as u64,
        }),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => {
            use cubecl::Runtime;
            let device = cubecl::cuda::CudaDevice { index };
            pool(
                cubecl::cuda::CudaRuntime::client(&device)
                    .memory_usage()
                    .ok()?,
            )
        }
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu => {
            use cubecl::Runtime;
            let device = cubecl::wgpu::WgpuDevice::DefaultDevice;
            pool(
                cubecl::wgpu::WgpuRuntime::client(&device)
                    .memory_usage()
                    .ok()?,
            )
        }
        _ => None,
    }
}

/// What a progress line adds of a device's memory: a GPU pool's bytes in use and reserved
/// (`", device 1.50 GiB in use, 3.00 GiB reserved"`); nothing for the CPU backend's heap,
/// whose lines give the process's peak RSS already.
pub fn progress_fragment(memory: DeviceMemory) -> Option<String> {
    match memory {
        DeviceMemory::Pool { in_use, reserved } => Some(format!(
            ", device {:.2} GiB in use, {:.2} GiB reserved",
            in_use as f64 / GIB,
            reserved as f64 / GIB
        )),
        DeviceMemory::Heap { .. } => None,
    }
}

/// What the progress lines of a run on `device` say of its memory, read at each line.
pub fn progress_reader(device: DeviceSpec) -> crate::util::progress::DeviceMemoryLine {
    std::sync::Arc::new(move || query(device).and_then(progress_fragment))
}

/// The variable that tells diffris a device's memory in GiB, where it cannot ask (wgpu, tch) or
/// should assume less than there is (a shared GPU).
pub const DEVICE_MEMORY_VAR: &str = "DIFFRIS_DEVICE_MEMORY_GIB";

/// What `device` offers a run: `DIFFRIS_DEVICE_MEMORY_GIB` when set, else, where diffris can
/// ask, the RAM the system reports available (`MemAvailable` of `/proc/meminfo`) for the CPU
/// backend and a CUDA GPU's total memory (from the driver); `None` elsewhere. A value of the
/// variable that is not a positive number is an error naming it.
pub fn capacity(device: DeviceSpec) -> anyhow::Result<Option<Capacity>> {
    if let Ok(text) = std::env::var(DEVICE_MEMORY_VAR) {
        let gib: f64 = text
            .trim()
            .parse()
            .ok()
            .filter(|g: &f64| g.is_finite() && *g > 0.0)
            .ok_or_else(|| {
                anyhow::anyhow!("{DEVICE_MEMORY_VAR}={text:?} is not a positive number of GiB")
            })?;
        return Ok(Some(Capacity {
            bytes: gib * (1u64 << 30) as f64,
            what: format!("device memory set by {DEVICE_MEMORY_VAR}"),
        }));
    }
    Ok(match device {
        DeviceSpec::Flex => std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_available(&m))
            .map(|bytes| Capacity {
                bytes: bytes as f64,
                what: "RAM available".into(),
            }),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => crate::device::backend::cuda_check::total_memory(index)
            .ok()
            .map(|bytes| Capacity {
                bytes: bytes as f64,
                what: "GPU memory".into(),
            }),
        _ => None,
    })
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn pool(usage: cubecl::MemoryUsage) -> Option<DeviceMemory> {
    Some(DeviceMemory::Pool {
        in_use: usage.bytes_in_use,
        reserved: usage.bytes_reserved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_memory_is_read_from_meminfo() {
        let meminfo = "MemTotal:       24596812 kB\nMemFree:        20000000 kB\n\
                       MemAvailable:   23456789 kB\nBuffers:          123456 kB\n";
        assert_eq!(mem_available(meminfo), Some(23_456_789 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: many kB\n"), None);
        // This machine's own figure (unless the variable overrides it).
        if std::env::var(DEVICE_MEMORY_VAR).is_err()
            && let Some(c) = capacity(DeviceSpec::Flex).unwrap()
        {
            assert!(c.bytes > 0.0 && c.what == "RAM available");
        }
    }

    /// A pool's fragment in GiB by hand; the heap's is left to the RSS figure.
    #[test]
    fn progress_lines_name_a_pools_bytes() {
        let pool = DeviceMemory::Pool {
            in_use: 3 << 29,
            reserved: 3 << 30,
        };
        assert_eq!(
            progress_fragment(pool).as_deref(),
            Some(", device 1.50 GiB in use, 3.00 GiB reserved")
        );
        assert_eq!(
            progress_fragment(DeviceMemory::Heap { live: 1, peak: 2 }),
            None
        );
    }

    /// The heap figure follows what is allocated: a 64 MiB buffer raises the live bytes and the
    /// peak by at least its size while it lives.
    #[test]
    fn the_heap_figure_counts_an_allocation() {
        let before = match query(DeviceSpec::Flex) {
            Some(DeviceMemory::Heap { live, .. }) => live,
            other => panic!("{other:?}"),
        };
        crate::device::allocator::reset_peak();
        let buffer = vec![1u8; 64 << 20];
        let during = query(DeviceSpec::Flex).unwrap();
        drop(buffer);
        match during {
            // Other test threads allocate too: the bound is one-sided.
            DeviceMemory::Heap { live, peak } => {
                assert!(peak >= live);
                assert!(
                    live + (1 << 20) >= before + (64 << 20),
                    "{before} -> {live}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(during.mib() >= 64.0 - 1.0);
    }
}
