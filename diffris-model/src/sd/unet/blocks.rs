//! diffusers `unet_2d_blocks.py`: the down, mid and up blocks of the SD-1.x UNet
//! (`CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D` / `UpBlock2D`). A block without attention has an empty `attentions`.

use burn::module::Module;
use burn::tensor::Tensor;
use diffris_kernels::SdBackend;

use crate::sd::attention::Transformer2D;
use crate::sd::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// What a block's transformers share.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSpec {
    pub context_dim: usize,
    pub heads: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl AttentionSpec {
    fn transformer<B: SdBackend>(&self, channels: usize, device: &B::Device) -> Transformer2D<B> {
        Transformer2D::new(
            channels,
            self.context_dim,
            self.heads,
            self.groups,
            self.linear_projection,
            device,
        )
    }
}

/// Resnet widths and norms shared by the blocks of one UNet.
#[derive(Clone, Copy, Debug)]
pub struct ResnetSpec {
    pub temb_dim: usize,
    pub groups: usize,
    pub eps: f64,
}

impl ResnetSpec {
    fn block<B: SdBackend>(&self, cin: usize, cout: usize, device: &B::Device) -> ResnetBlock2D<B> {
        ResnetBlock2D::new(
            cin,
            cout,
            Some(self.temb_dim),
            self.groups,
            self.eps,
            device,
        )
    }
}

/// A down block: `layers` resnets (each followed by a transformer when it has attention) and
/// an optional stride-2 downsampler.
#[derive(Module, Debug)]
pub struct DownBlock<B: SdBackend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: SdBackend> DownBlock<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        layers: usize,
        resnet: ResnetSpec,
        attention: Option<AttentionSpec>,
        downsample: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|i| resnet.block(if i == 0 { cin } else { cout }, cout, device))
                .collect(),
            attentions: attention
                .map(|a| (0..layers).map(|_| a.transformer(cout, device)).collect())
                .unwrap_or_default(),
            downsamplers: if downsample {
                vec![Downsample2D::new(cout, false, device)]
            } else {
                vec![]
            },
        }
    }

    /// Returns the output and the skip connections it produced (one per layer, plus the
    /// downsampled output); cross-attention probabilities go to `probs` when `want_probs`.
    ///
    /// # Shapes
    /// `x`: `[B, C_in, H, W]` -> `[B, C_out, H/2, W/2]` (or `H, W` without a downsampler).
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        want_probs: bool,
        probs: &mut Vec<Tensor<B, 3>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb.clone()));
            if let Some(attn) = self.attentions.get(i) {
                let (h, p) = attn.forward(x, context.clone(), want_probs);
                x = h;
                probs.extend(p);
            }
            skips.push(x.clone());
        }
        for down in &self.downsamplers {
            x = down.forward(x);
            skips.push(x.clone());
        }
        (x, skips)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
#[derive(Module, Debug)]
pub struct MidBlock<B: SdBackend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2D<B>>,
}

impl<B: SdBackend> MidBlock<B> {
    pub fn new(
        channels: usize,
        resnet: ResnetSpec,
        attention: AttentionSpec,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: vec![
                resnet.block(channels, channels, device),
                resnet.block(channels, channels, device),
            ],
            attentions: vec![attention.transformer(channels, device)],
        }
    }

    /// # Shapes
    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(temb.clone()));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x, context.clone(), false).0;
            x = resnet.forward(x, Some(temb.clone()));
        }
        x
    }
}

/// An up block: `layers + 1` resnets over `cat(x, skip)` (each followed by a transformer when
/// it has attention) and an optional nearest 2x upsampler.
#[derive(Module, Debug)]
pub struct UpBlock<B: SdBackend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// Input widths of one up block: what comes from below, and the widths of its skips.
#[derive(Clone, Debug)]
pub struct UpBlockWidths {
    pub prev_out: usize,
    pub out: usize,
    /// Width of the skip each resnet consumes, in consumption order.
    pub skips: Vec<usize>,
}

impl<B: SdBackend> UpBlock<B> {
    pub fn new(
        widths: &UpBlockWidths,
        resnet: ResnetSpec,
        attention: Option<AttentionSpec>,
        upsample: bool,
        device: &B::Device,
    ) -> Self {
        let layers = widths.skips.len();
        Self {
            resnets: widths
                .skips
                .iter()
                .enumerate()
                .map(|(i, &skip)| {
                    let cin = if i == 0 { widths.prev_out } else { widths.out };
                    resnet.block(cin + skip, widths.out, device)
                })
                .collect(),
            attentions: attention
                .map(|a| {
                    (0..layers)
                        .map(|_| a.transformer(widths.out, device))
                        .collect()
                })
                .unwrap_or_default(),
            upsamplers: if upsample {
                vec![Upsample2D::new(widths.out, device)]
            } else {
                vec![]
            },
        }
    }

    /// Consumes skips from the end of `skips`. Returns the output and the state after layer
    /// `tap_layer` (before any upsampling), the VPD feature tap of this level.
    ///
    /// # Shapes
    /// `x`: `[B, C_prev, H, W]` -> (`[B, C_out, 2H, 2W]` or `[B, C_out, H, W]` without an
    /// upsampler, tap `[B, C_out, H, W]`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        skips: &mut Vec<Tensor<B, 4>>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        tap_layer: usize,
        want_probs: bool,
        probs: &mut Vec<Tensor<B, 3>>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let mut tap = None;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("one skip connection per up-block resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb.clone()));
            if let Some(attn) = self.attentions.get(i) {
                let (h, p) = attn.forward(x, context.clone(), want_probs);
                x = h;
                probs.extend(p);
            }
            if i == tap_layer {
                tap = Some(x.clone());
            }
        }
        let tap = tap.unwrap_or_else(|| x.clone());
        for up in &self.upsamplers {
            let [_, _, h, w] = x.dims();
            let size = skips
                .last()
                .map_or([2 * h, 2 * w], |s| [s.dims()[2], s.dims()[3]]);
            x = up.forward(x, size);
        }
        (x, tap)
    }
}
