//! `DiffRis`: the whole model of the paper (section 3.2; `docs/DESIGN.md`) assembled from
//! one config. The frozen VAE, CLIP and UNet are `#[module(skip)]` fields: they are not
//! parameters of the trained module (not optimised, not checkpointed), yet the UNet stays in the
//! autodiff graph so the CP-adapter learns through its cross-attention.

use burn::module::Module;
use burn::tensor::{DType, Int, Tensor, backend::Backend};
use diffris_kernels::SdBackend;
use serde::{Deserialize, Serialize};

use crate::adapter::{CpAdapter, CpAdapterConfig};
use crate::decoder::loss::{LossConfig, training_loss};
use crate::decoder::{Decoder, DecoderConfig, DecoderInput};
use crate::error::{ConfigError, ensure};
use crate::precision::{Precision, cast_module, to_dtype};
use crate::sd::clip::ClipTextModel;
use crate::sd::config::SdConfig;
use crate::sd::stack::StableDiffusion;
use crate::sd::unet::{UNet2DConditionModel, UNetOutput, UNetRequest};
use crate::sd::vae::VaeEncoder;

/// Everything that defines a DiffRIS model besides the SD weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffRisConfig {
    /// Input size `(H, W)`, multiples of 64.
    pub image_size: (usize, usize),
    /// Multiplier of the VAE posterior mean. 1.0 by default: VPD's `refer/` code (DiffRIS's
    /// lineage; the paper is silent) feeds `encode(img).mode()` unscaled; SD-1.x's own scaling
    /// factor is 0.18215 (docs/DESIGN.md, section 2).
    pub latent_scale: f64,
    /// The UNet timestep of the single denoising pass.
    pub timestep: f64,
    /// Concatenate the averaged cross-attention maps to the F32 and F16 taps.
    pub cross_attention_maps: bool,
    /// Which text states the decoders that read text (PCMRD, CAMD, LMP's and OAD's word
    /// features) take: the adapter's output `L'`, as the UNet does (default), or CLIP's `L`.
    /// The paper's Fig. 2 feeds the adapted text to both; VPD's `refer/` code passes its
    /// adapted states on too. Left out of a serialised config at its default.
    #[serde(skip_serializing_if = "DecoderText::is_adapted")]
    pub decoder_text: DecoderText,
    pub adapter: CpAdapterConfig,
    pub decoder: DecoderConfig,
    pub loss: LossConfig,
    /// Precision of the frozen VAE, CLIP and UNet (weights and arithmetic); the adapter,
    /// decoder and loss stay f32 (see [`crate::precision`]). Left out of a serialised config
    /// when f32, so configs written before the field existed read back unchanged.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Whether the UNet stays frozen (DiffRIS, default) or trains with the adapter and decoder
    /// (VPD's `refer/` code puts every UNet parameter into its AdamW at the base learning rate).
    /// Left out of a serialised config when frozen.
    #[serde(skip_serializing_if = "UnetMode::is_frozen")]
    pub unet: UnetMode,
}

/// Whether the UNet trains ([`DiffRisConfig::unet`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnetMode {
    /// Frozen, as DiffRIS keeps it.
    #[default]
    Frozen,
    /// A trained parameter set at the base learning rate, in f32 (VPD).
    Trainable,
}

impl UnetMode {
    pub fn is_frozen(&self) -> bool {
        *self == Self::Frozen
    }
}

impl Default for DiffRisConfig {
    fn default() -> Self {
        Self {
            image_size: (512, 512),
            latent_scale: 1.0,
            timestep: 1.0,
            cross_attention_maps: true,
            decoder_text: DecoderText::Adapted,
            adapter: CpAdapterConfig::default(),
            decoder: DecoderConfig::default(),
            loss: LossConfig::default(),
            precision: Precision::F32,
            unet: UnetMode::Frozen,
        }
    }
}

/// The text states the decoder reads ([`DiffRisConfig::decoder_text`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderText {
    /// The CP-adapter's output `L'`, the states the UNet is conditioned on.
    #[default]
    Adapted,
    /// CLIP's states `L`, before the adapter: the adapter then learns only through the UNet.
    Clip,
}

impl DecoderText {
    pub fn is_adapted(&self) -> bool {
        *self == Self::Adapted
    }
}

/// Feature levels whose taps get the cross-attention maps (F32, F16).
pub const MAP_LEVELS: [usize; 2] = [1, 2];

/// The DiffRIS model.
#[derive(Module, Debug)]
pub struct DiffRis<B: SdBackend> {
    pub adapter: CpAdapter<B>,
    pub decoder: Decoder<B>,
    #[module(skip)]
    pub text_encoder: ClipTextModel<B>,
    #[module(skip)]
    pub vae: VaeEncoder<B>,
    /// The frozen UNet; `None` when it trains (then it is [`Self::trained_unet`]).
    #[module(skip)]
    pub frozen_unet: Option<UNet2DConditionModel<B>>,
    /// The UNet as trained parameters (`model.unet: trainable`), `None` when frozen.
    pub trained_unet: Option<UNet2DConditionModel<B>>,
    /// The configuration the model was built from (plain data, not parameters): the forward
    /// pass reads its input size, latent scale, timestep, map switch and loss.
    pub config: DiffRisConfig,
}

/// The outputs of one forward pass.
#[derive(Clone, Debug)]
pub struct DiffRisOutput<B: Backend> {
    /// `[B, 1, H, W]` foreground logits at the input size.
    pub logits: Tensor<B, 4>,
    /// `[B, 2, H, W]` for two-class decoders.
    pub class_logits: Option<Tensor<B, 4>>,
    /// The referent token's assignment per stage, `[B, 1, h_s, w_s]` (PCMRD with tokens).
    pub hit_maps: Vec<Tensor<B, 4>>,
    /// Every query token's soft assignment per stage, `[B, N, h_s, w_s]`, detached (PCMRD with
    /// tokens; see [`crate::decoder::DecoderOutput::assignments`]).
    pub assignments: Vec<Tensor<B, 4>>,
}

/// The largest input side diffris accepts: 8 times SD-1.x's 512, far past what its attention
/// fits on any GPU; a larger value is a typo that would otherwise allocate without bound.
pub const MAX_IMAGE_SIDE: usize = 4096;

impl DiffRisConfig {
    /// Checks sizes against the SD architecture; the error names the field.
    pub fn validate(&self, sd: &SdConfig) -> Result<(), ConfigError> {
        let f = sd.vae.downsampling() << (sd.unet.levels() - 1);
        let (h, w) = self.image_size;
        ensure(
            h > 0 && w > 0 && h.is_multiple_of(f) && w.is_multiple_of(f),
            "image_size",
            || format!("({h}, {w}) must be a positive multiple of {f} for this architecture"),
        )?;
        ensure(
            h <= MAX_IMAGE_SIDE && w <= MAX_IMAGE_SIDE,
            "image_size",
            || format!("({h}, {w}) is larger than {MAX_IMAGE_SIDE} pixels a side"),
        )?;
        ensure(
            self.unet.is_frozen() || self.precision == Precision::F32,
            "unet",
            || {
                format!(
                    "trainable needs the stack in f32 (precision is {:?}): half-precision \
                     weights would be trained without an f32 master copy",
                    self.precision
                )
            },
        )?;
        ensure(
            self.latent_scale.is_finite() && self.latent_scale > 0.0,
            "latent_scale",
            || format!("{} is not a positive number", self.latent_scale),
        )?;
        ensure(
            self.timestep.is_finite()
                && (0.0..=(crate::sd::schedule::SD_TRAIN_STEPS - 1) as f64)
                    .contains(&self.timestep),
            "timestep",
            || {
                format!(
                    "{} is not a timestep SD was trained on (0 to {})",
                    self.timestep,
                    crate::sd::schedule::SD_TRAIN_STEPS - 1
                )
            },
        )?;
        self.adapter
            .validate(sd.clip.hidden_size)
            .map_err(|e| e.within("adapter"))?;
        self.decoder.validate().map_err(|e| e.within("decoder"))?;
        self.loss.validate().map_err(|e| e.within("loss"))
    }

    /// Assembles the model around loaded (or random) SD components, which are frozen here and
    /// cast to [`DiffRisConfig::precision`] (a no-op when they already have it).
    ///
    /// With [`UnetMode::Trainable`] the UNet stays in f32 and every one of its parameters is
    /// tracked (on an autodiff backend: weights read from a file arrive untracked).
    pub fn init<B: SdBackend>(&self, sd: StableDiffusion<B>, device: &B::Device) -> DiffRis<B> {
        let (adapter, decoder) = self.init_trained(&sd.config(), device);
        // In this order: lazily initialised weights draw from the backend's random stream as
        // they are first touched (by `no_grad` here), text encoder, VAE, then UNet.
        let text_encoder = cast_module(sd.text_encoder.no_grad(), self.precision);
        let vae = cast_module(sd.vae.no_grad(), self.precision);
        let (frozen_unet, trained_unet) = match self.unet {
            UnetMode::Frozen => (Some(cast_module(sd.unet.no_grad(), self.precision)), None),
            UnetMode::Trainable => (None, Some(crate::precision::tracked(sd.unet))),
        };
        DiffRis {
            adapter,
            decoder,
            text_encoder,
            vae,
            frozen_unet,
            trained_unet,
            config: self.clone(),
        }
    }

    /// The trained parts, the CP-adapter and the decoder, sized for the SD architecture `arch`:
    /// the adapter at CLIP's width, the decoder on the UNet's taps (with the cross-attention
    /// maps' channels when [`Self::cross_attention_maps`]) at the latent size of
    /// [`Self::image_size`].
    pub fn init_trained<B: SdBackend>(
        &self,
        arch: &SdConfig,
        device: &B::Device,
    ) -> (CpAdapter<B>, Decoder<B>) {
        let text_dim = arch.clip.hidden_size;
        let levels: &[usize] = if self.cross_attention_maps {
            &MAP_LEVELS
        } else {
            &[]
        };
        let channels = arch
            .unet
            .tap_channels(levels, arch.clip.max_position_embeddings);
        let f = arch.vae.downsampling();
        let latent = (self.image_size.0 / f, self.image_size.1 / f);
        (
            self.adapter.init(text_dim, device),
            self.decoder.init(&channels, text_dim, latent, device),
        )
    }
}

impl<B: SdBackend> DiffRis<B> {
    /// The UNet, frozen or trained.
    pub fn unet(&self) -> &UNet2DConditionModel<B> {
        self.trained_unet
            .as_ref()
            .or(self.frozen_unet.as_ref())
            .expect("a DiffRIS model holds its UNet frozen or trained")
    }

    /// The frozen UNet (for moving it to another device), `None` when it trains.
    pub fn frozen_unet_mut(&mut self) -> Option<&mut UNet2DConditionModel<B>> {
        self.frozen_unet.as_mut()
    }

    /// The scaled VAE latent (no gradient).
    ///
    /// # Shapes
    /// `[B, 3, H, W]` in [-1, 1] -> `[B, C, H/f, W/f]`: `C` latent channels and downsampling
    /// factor `f` of the VAE (SD-1.x: 4 and 8; the tiny profile's VAE: 32 and 4).
    pub fn encode_image(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        encode_latent(&self.vae, image, self.config.latent_scale)
    }

    /// The CLIP text states `L` (no gradient).
    ///
    /// # Shapes
    /// `[B, 77]` -> `[B, 77, D]`.
    pub fn encode_text(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        encode_text(&self.text_encoder, ids)
    }

    /// Adapter, UNet and decoder on already-encoded inputs (VAE and CLIP outputs do not depend
    /// on trained weights, so they can be computed once per sample).
    ///
    /// # Shapes
    /// `latent`: `[B, C, h, w]` (scaled; see [`DiffRis::encode_image`]), `text`: `[B, 77, D]`,
    /// `eos_index`: `[B]`.
    pub fn forward_encoded(
        &self,
        latent: Tensor<B, 4>,
        text: Tensor<B, 3>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
    ) -> DiffRisOutput<B> {
        let adapted = self.adapter.forward(text.clone());
        let decoder_text = self.decoder_text(adapted.clone(), text);
        self.forward_texts(latent, adapted, decoder_text, eos_index, training, false)
            .0
    }

    /// The text states the decoder reads when the UNet reads `adapted` and CLIP gave `clip`:
    /// `adapted`, or `clip` under `decoder_text: clip`.
    ///
    /// # Shapes
    /// `[B, 77, D]` both -> `[B, 77, D]`.
    pub fn decoder_text(&self, adapted: Tensor<B, 3>, clip: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.config.decoder_text {
            DecoderText::Adapted => adapted,
            DecoderText::Clip => clip,
        }
    }

    /// UNet and decoder conditioned on given text states: the adapter's output `L'` in the
    /// model's own pass, or any other states (the raw CLIP states, a baseline of an attribution
    /// path). With `attention_maps`, also returns each UNet level's head- and layer-averaged
    /// cross-attention probabilities, which the model computes anyway when its config
    /// concatenates them to the taps (otherwise they are computed for the caller, through the
    /// explicit-probability attention instead of the memory-efficient one: the same values to
    /// float rounding).
    ///
    /// `training`: Gumbel noise in PCMRD and batch statistics in the decoders' BatchNorms (under
    /// autodiff); off, a differentiable pass computes exactly what inference computes.
    ///
    /// # Shapes
    /// `latent`: `[B, C, h, w]`, `context`: `[B, 77, D]`, `eos_index`: `[B]` -> the output and,
    /// per UNet level `k`, `[B, 77, h_k, w_k]` in f32 (`None` for levels without
    /// cross-attention; empty unless `attention_maps`).
    pub fn forward_context(
        &self,
        latent: Tensor<B, 4>,
        context: Tensor<B, 3>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
        attention_maps: bool,
    ) -> (DiffRisOutput<B>, Vec<Option<Tensor<B, 4>>>) {
        self.forward_texts(
            latent,
            context.clone(),
            context,
            eos_index,
            training,
            attention_maps,
        )
    }

    /// [`Self::forward_context`] with the UNet conditioned on `context` and the decoder reading
    /// `decoder_text` (the two differ under `decoder_text: clip`).
    ///
    /// # Shapes
    /// As [`Self::forward_context`]; `decoder_text`: `[B, 77, D]`.
    pub fn forward_texts(
        &self,
        latent: Tensor<B, 4>,
        context: Tensor<B, 3>,
        decoder_text: Tensor<B, 3>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
        attention_maps: bool,
    ) -> (DiffRisOutput<B>, Vec<Option<Tensor<B, 4>>>) {
        let b = latent.dims()[0];
        let device = latent.device();
        let timesteps = Tensor::<B, 1>::full([b], self.config.timestep, &device);
        let out = self.unet().forward(
            latent,
            timesteps,
            context,
            UNetRequest {
                sample: false,
                attention_maps: self.config.cross_attention_maps || attention_maps,
                attention_probs: false,
            },
        );
        let features = self.decoder_features(&out);
        let maps = if attention_maps {
            out.attention_maps
                .iter()
                .map(|m| m.clone().map(|m| to_dtype(m, DType::F32)))
                .collect()
        } else {
            vec![]
        };
        drop(out);
        let dec = self.decoder.forward(DecoderInput {
            features: &features,
            text: &decoder_text,
            eos_index: &eos_index,
            image_size: self.config.image_size,
            training,
        });
        let output = DiffRisOutput {
            logits: dec.logits,
            class_logits: dec.class_logits,
            hit_maps: dec.hit_maps,
            assignments: dec.assignments,
        };
        (output, maps)
    }

    /// What the decoder reads from a UNet pass: the taps, with the cross-attention maps at
    /// [`MAP_LEVELS`] when the config asks for them, in f32 (a no-op at f32 precision, a
    /// differentiable cast otherwise).
    ///
    /// # Shapes
    /// tap `k` `[B, C_k, h_k, w_k]` -> `[B, C_k (+ 77), h_k, w_k]`.
    pub fn decoder_features(&self, out: &UNetOutput<B>) -> Vec<Tensor<B, 4>> {
        let levels: &[usize] = if self.config.cross_attention_maps {
            &MAP_LEVELS
        } else {
            &[]
        };
        out.features_with_maps(levels)
            .into_iter()
            .map(|f| to_dtype(f, DType::F32))
            .collect()
    }

    /// The whole model from pixels and token ids.
    ///
    /// # Shapes
    /// `image`: `[B, 3, H, W]` in [-1, 1], `ids`: `[B, 77]`, `eos_index`: `[B]`.
    pub fn forward(
        &self,
        image: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
    ) -> DiffRisOutput<B> {
        let latent = self.encode_image(image);
        let text = self.encode_text(ids);
        self.forward_encoded(latent, text, eos_index, training)
    }

    /// The training loss of an output against `[B, 1, H, W]` masks in {0, 1}.
    pub fn loss(&self, out: &DiffRisOutput<B>, target: Tensor<B, 4>) -> Tensor<B, 1> {
        training_loss(
            &self.config.loss,
            out.logits.clone(),
            out.class_logits.clone(),
            &out.hit_maps,
            target,
        )
    }
}

/// The scaled VAE latent of `image` in f32, without gradient: what [`DiffRis::encode_image`]
/// computes, for callers holding only the encoder.
///
/// # Shapes
/// `[B, 3, H, W]` in [-1, 1] -> `[B, C, H/f, W/f]`.
pub fn encode_latent<B: SdBackend>(
    vae: &VaeEncoder<B>,
    image: Tensor<B, 4>,
    latent_scale: f64,
) -> Tensor<B, 4> {
    to_dtype(vae.forward(image), DType::F32)
        .mul_scalar(latent_scale)
        .detach()
}

/// The CLIP text states of `ids` in f32, without gradient ([`DiffRis::encode_text`]).
///
/// # Shapes
/// `[B, 77]` -> `[B, 77, D]`.
pub fn encode_text<B: SdBackend>(clip: &ClipTextModel<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    to_dtype(encode_text_native(clip, ids), DType::F32)
}

/// The CLIP text states of `ids` in the text encoder's own dtype (f32, or f16/bf16 at half
/// precision), without gradient: [`encode_text`] before its cast to f32, which is exact, so
/// states stored at this precision and widened later are [`encode_text`]'s.
///
/// # Shapes
/// `[B, 77]` -> `[B, 77, D]`.
pub fn encode_text_native<B: SdBackend>(
    clip: &ClipTextModel<B>,
    ids: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    clip.forward(ids).detach()
}

/// Parameter count of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentParams {
    pub name: &'static str,
    pub trainable: bool,
    pub count: usize,
}

/// Parameters per component of the model `cfg` builds around the architecture `sd`, counted from
/// shapes only (nothing is allocated, so the full-size model can be counted on any machine).
pub fn parameter_counts<B: SdBackend>(
    cfg: &DiffRisConfig,
    sd: &SdConfig,
    device: &B::Device,
) -> Vec<ComponentParams> {
    use crate::weights::apply::param_infos;
    let count = |infos: Vec<crate::weights::apply::ParamInfo>| -> usize {
        infos
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    };
    let stack = sd.init::<B>(device);
    let (adapter, decoder) = cfg.init_trained::<B>(sd, device);
    vec![
        ComponentParams {
            name: "CLIP text encoder",
            trainable: false,
            count: count(param_infos::<B, _>(&stack.text_encoder)),
        },
        ComponentParams {
            name: "VAE encoder",
            trainable: false,
            count: count(param_infos::<B, _>(&stack.vae)),
        },
        ComponentParams {
            name: "UNet",
            trainable: !cfg.unet.is_frozen(),
            count: count(param_infos::<B, _>(&stack.unet)),
        },
        ComponentParams {
            name: "CP-adapter",
            trainable: true,
            count: count(param_infos::<B, _>(&adapter)),
        },
        ComponentParams {
            name: "decoder",
            trainable: true,
            count: count(param_infos::<B, _>(&decoder)),
        },
    ]
}
