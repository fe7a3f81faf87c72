//! DiffRIS model: the frozen Stable Diffusion components, the CP-adapter, the decoders, and
//! checkpoint loading. Every module is generic over `B: SdBackend`, Burn's `Backend` with the
//! operations of `diffris-kernels`.

pub mod adapter;
pub mod decoder;
pub mod diffris;
pub mod error;
pub mod explain;
pub mod norm;
pub mod precision;
pub mod sd;
pub mod weights;

pub use error::{ModelError, Result};
