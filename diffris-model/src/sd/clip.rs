//! transformers `CLIPTextModel` (the SD-1.x text tower): token + position embeddings, pre-LN
//! encoder layers with causal self-attention and quick-GELU MLPs, final LayerNorm.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, backend::Backend};

use super::attention::{frozen_attention, merge_heads, split_heads};
use super::config::{ClipActivation, ClipConfig};
use crate::norm::layer_norm;

/// Token and position embeddings.
#[derive(Module, Debug)]
pub struct ClipEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

/// Causal multi-head self-attention with biased projections.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    heads: usize,
}

/// `fc1 -> activation -> fc2`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// One pre-LN encoder layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

/// The encoder stack.
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    pub layers: Vec<ClipEncoderLayer<B>>,
}

/// `CLIPTextTransformer`; paths match transformers' keys after the `text_model.` prefix.
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub embeddings: ClipEmbeddings<B>,
    pub encoder: ClipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
    config: ClipConfig,
}

impl ClipConfig {
    /// Builds the text model with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipTextModel<B> {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        ClipTextModel {
            embeddings: ClipEmbeddings {
                token_embedding: EmbeddingConfig::new(self.vocab_size, d).init(device),
                position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d)
                    .init(device),
            },
            encoder: ClipEncoder {
                layers: (0..self.num_hidden_layers)
                    .map(|_| ClipEncoderLayer {
                        self_attn: ClipAttention {
                            q_proj: lin(d, d),
                            k_proj: lin(d, d),
                            v_proj: lin(d, d),
                            out_proj: lin(d, d),
                            heads: self.num_attention_heads,
                        },
                        layer_norm1: ln(),
                        mlp: ClipMlp {
                            fc1: lin(d, self.intermediate_size),
                            fc2: lin(self.intermediate_size, d),
                        },
                        layer_norm2: ln(),
                    })
                    .collect(),
            },
            final_layer_norm: ln(),
            config: self.clone(),
        }
    }
}

impl<B: diffris_kernels::SdBackend> ClipTextModel<B> {
    /// The architecture this model was built from.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// `last_hidden_state`: the output after `final_layer_norm`, in the dtype of the weights.
    ///
    /// # Shapes
    /// `ids`: `[B, T]` (`T <= max_position_embeddings`) -> `[B, T, hidden_size]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .expand([b, t]);
        let mut x = self.embeddings.token_embedding.forward(ids)
            + self.embeddings.position_embedding.forward(positions);
        let act = self.config().hidden_act;
        for layer in &self.encoder.layers {
            let a = &layer.self_attn;
            let h = layer_norm(&layer.layer_norm1, x.clone());
            let q = split_heads(a.q_proj.forward(h.clone()), a.heads);
            let k = split_heads(a.k_proj.forward(h.clone()), a.heads);
            let v = split_heads(a.v_proj.forward(h), a.heads);
            let opts = AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            };
            let h = a
                .out_proj
                .forward(merge_heads(frozen_attention(q, k, v, opts)));
            x = x + h;
            let h = layer
                .mlp
                .fc1
                .forward(layer_norm(&layer.layer_norm2, x.clone()));
            let h = match act {
                ClipActivation::QuickGelu => h.clone() * sigmoid(h.mul_scalar(1.702)),
                ClipActivation::Gelu => gelu(h),
            };
            x = x + layer.mlp.fc2.forward(h);
        }
        layer_norm(&self.final_layer_norm, x)
    }
}
