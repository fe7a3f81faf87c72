//! Decoders from the UNet's feature taps to mask logits: PCMRD (the paper's) and the comparison
//! decoders of Table 5, behind one config switch.

pub mod camd;
pub mod common;
pub mod lmp;
pub mod loss;
pub mod oaqil;
pub mod oaqil_layout;
pub mod pcmrd;
pub mod resize;
pub mod rotated;
pub mod wide_attention;

use burn::module::Module;
use diffris_kernels::SdBackend;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ensure};

pub use camd::{Camd, CamdConfig};
pub use lmp::{Lmp, LmpConfig};
pub use oaqil::{OaqilLayout, PositionalInit, Temperature, TextReading};
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
pub enum Decoder<B: SdBackend> {
    Pcmrd(Pcmrd<B>),
    /// LMP or OAD.
    Lmp(Lmp<B>),
    Camd(Camd<B>),
}

impl DecoderConfig {
    /// Checks the sizes; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one =
            |v: usize, field: &str| ensure(v > 0, field, || "must be at least 1".into());
        match self {
            Self::Pcmrd(c) => {
                at_least_one(c.hidden, "hidden")?;
                at_least_one(c.tokens, "tokens")?;
                ensure(c.baseline_level <= 3, "baseline_level", || {
                    format!("{} is not a tap (0 = F64 .. 3 = F8)", c.baseline_level)
                })?;
                ensure(
                    c.tau_init > 0.0 && c.tau_init.is_finite(),
                    "tau_init",
                    || format!("{} is not a positive temperature", c.tau_init),
                )?;
                let positive_std = |v: f64| v > 0.0 && v.is_finite();
                ensure(positive_std(c.oaqil.token_std), "oaqil.token_std", || {
                    format!("{} is not a positive standard deviation", c.oaqil.token_std)
                })?;
                if let PositionalInit::Normal(std) = c.oaqil.pos_init {
                    ensure(positive_std(std), "oaqil.pos_init", || {
                        format!("normal({std}) has no positive standard deviation")
                    })?;
                }
                ensure(
                    (0.0..1.0).contains(&c.oaqil.dropout),
                    "oaqil.dropout",
                    || format!("{} is not a probability below 1", c.oaqil.dropout),
                )
            }
            Self::Lmp(c) | Self::Oad(c) => {
                at_least_one(c.hidden, "hidden")?;
                at_least_one(c.kernels, "kernels")?;
                ensure(
                    (0.0..1.0).contains(&c.routing_dropout),
                    "routing_dropout",
                    || format!("{} is not a probability below 1", c.routing_dropout),
                )?;
                // ARC's rotation matrix is a rotation for angles up to 45° either way only.
                ensure(
                    (0.0..=45.0).contains(&c.max_angle_deg),
                    "max_angle_deg",
                    || {
                        format!(
                            "{} is not an angle from 0 to 45 degrees (ARC's rotation of a 3x3 \
                             kernel holds up to 45°)",
                            c.max_angle_deg
                        )
                    },
                )
            }
            Self::Camd(c) => {
                at_least_one(c.hidden, "hidden")?;
                at_least_one(c.layers, "layers")?;
                at_least_one(c.prompts, "prompts")?;
                at_least_one(c.ffn_dim, "ffn_dim")?;
                ensure(c.hidden.is_multiple_of(2), "hidden", || {
                    format!(
                        "{} is odd (the sine position encoding needs it even)",
                        c.hidden
                    )
                })?;
                at_least_one(c.attn_dim, "attn_dim")?;
                ensure(
                    c.heads > 0 && c.attn_dim.is_multiple_of(c.heads),
                    "heads",
                    || format!("{} does not divide attn_dim ({})", c.heads, c.attn_dim),
                )
            }
        }
    }

    /// Builds the decoder for taps of `channels` (finest first), text width `text_dim`, and a
    /// finest tap of nominal size `latent`.
    pub fn init<B: SdBackend>(
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

impl<B: SdBackend> Decoder<B> {
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
