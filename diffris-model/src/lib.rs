//! DiffRIS model: the frozen Stable Diffusion components, the CP-adapter, the decoders, and
//! checkpoint loading. Every module is generic over Burn's `Backend`.

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
