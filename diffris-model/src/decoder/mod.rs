//! Decoders from the UNet's feature taps to mask logits: PCMRD (the paper's) and the comparison
//! decoders of Table 5, behind one config switch.

pub mod camd;
pub mod common;
pub mod lmp;
pub mod loss;
pub mod oaqil;
pub mod pcmrd;
pub mod resize;
pub mod rotated;

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

pub use camd::{Camd, CamdConfig};
pub use lmp::{Lmp, LmpConfig};
pub use pcmrd::{DecoderInput, DecoderOutput, Pcmrd, PcmrdConfig};

/// Which decoder reads the UNet features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderConfig {
    /// The paper's decoder.
    Pcmrd(PcmrdConfig),
    /// LAVT's simple decoder (VPD).
    Lmp(LmpConfig),
    /// RMSIN's decoder: LMP with adaptive rotated convolutions.
    Oad(LmpConfig),
    /// CARIS's decoder (full attention in place of deformable attention).
    Camd(CamdConfig),
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self::Pcmrd(PcmrdConfig::default())
    }
}

/// A built decoder.
// Built once per model; boxing would only add an indirection to every forward.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Decoder<B: Backend> {
    Pcmrd(Pcmrd<B>),
    /// LMP or OAD.
    Lmp(Lmp<B>),
    Camd(Camd<B>),
}

impl DecoderConfig {
    /// Builds the decoder for taps of `channels` (finest first), text width `text_dim`, and a
    /// finest tap of nominal size `latent`.
    pub fn init<B: Backend>(
        &self,
        channels: &[usize],
        text_dim: usize,
        latent: (usize, usize),
        device: &B::Device,
    ) -> Decoder<B> {
        match self {
            Self::Pcmrd(c) => Decoder::Pcmrd(c.init(channels, text_dim, latent, device)),
            Self::Lmp(c) => Decoder::Lmp(c.init(channels, false, device)),
            Self::Oad(c) => Decoder::Lmp(c.init(channels, true, device)),
            Self::Camd(c) => Decoder::Camd(c.init(channels, text_dim, device)),
        }
    }
}

impl<B: Backend> Decoder<B> {
    /// # Shapes
    /// See [`DecoderInput`] and [`DecoderOutput`].
    pub fn forward(&self, input: DecoderInput<'_, B>) -> DecoderOutput<B> {
        match self {
            Self::Pcmrd(d) => d.forward(input),
            Self::Lmp(d) => d.forward(input),
            Self::Camd(d) => d.forward(input),
        }
    }
}

#[cfg(test)]
mod tests;
