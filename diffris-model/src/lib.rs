//! DiffRIS model: the frozen Stable Diffusion components, the CP-adapter, the decoders, and
//! checkpoint loading. Every module is generic over Burn's `Backend`.

// Burn's distributed data parallel needs `DistributedBackend`, which of our backends only
// cubecl's CUDA runtime implements (its collectives are NCCL's); see `ops::DataParallelBackend`.
#[cfg(all(
    feature = "ddp",
    any(feature = "flex", feature = "tch", feature = "wgpu")
))]
compile_error!(
    "the `ddp` feature builds with the cuda backend alone: \
     `--no-default-features --features cuda,ddp` (Burn 0.21 implements distributed training \
     for its CUDA runtime only)"
);

pub mod adapter;
pub mod decoder;
pub mod diffris;
pub mod error;
pub mod explain;
pub mod norm;
pub mod ops;
pub mod precision;
pub mod sd;
pub mod weights;

pub use error::{ModelError, Result};
