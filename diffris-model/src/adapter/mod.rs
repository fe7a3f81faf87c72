//! The context perception adapter (CP-adapter, paper section 3.3, Table 4): refines the frozen
//! CLIP states `L` into `L' = L + gamma * F_d` before they condition the UNet.
//!
//! 1. Global context modeling: `E = TransformerEncoder(L)` (post-LN, ReLU FFN).
//! 2. Object-aware reasoning (eq. 8-11): the original tokens query the context-encoded ones,
//!    `F = L + Attn(W_q L, W_k E, W_v E)`, then `F_o = F + MLP(F)` with a two-layer ReLU MLP. The
//!    paper's equations are lost from the text; this reading follows "integrated with the input
//!    linguistic features". `reasoning_query: encoded` swaps the roles,
//!    `F = L + Attn(W_q E, W_k L, W_v L)`. Without component 1, `E = L`.
//! 3. Domain-specific adjustment (eq. 12): `F_d = F_o + B(A(F_o))`, a low-rank branch whose
//!    up-projection `B` starts at zero.
//!
//! Each component is a switch, so Table 4's rows are configs: (1) no adapter, `L' = L`;
//! (2) +1, `F_d = E`; (3) +1+2, `F_d = F_o`; (4) +1+2+3.
//!
//! `kind: vpd` replaces the three components by VPD's text adapter (`TextAdapterRefer` in VPD's
//! `vpd/models.py`, used by its `refer/models_refer/model.py`): `F_d = Linear(GELU(Linear(L)))`,
//! both layers `D -> D` with bias, under the same gate, `L' = L + gamma * F_d`. It is the adapter
//! of the VPD rows of Tables 1-3 (docs/DESIGN.md, section 2).

use burn::module::{Module, Param};
use burn::nn::activation::ActivationConfig;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ensure};

/// Which text adapter refines the CLIP states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// DiffRIS's CP-adapter: the three components below, each a switch.
    #[default]
    Cp,
    /// VPD's text adapter: a two-layer GELU MLP `D -> D -> D` under the gate; the component
    /// switches and sizes (`global_context` .. `rank`) are not read.
    Vpd,
}

impl AdapterKind {
    /// True for the CP-adapter (the field is left out of a serialised config then, so configs
    /// written before it existed read back unchanged).
    pub fn is_cp(&self) -> bool {
        *self == Self::Cp
    }
}

/// Which states pose the queries of the object-aware reasoning attention (eq. 8-9, whose symbols
/// are lost from the paper's text); the result is added to the input `L` either way (eq. 10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningQuery {
    /// The original states query the context-encoded ones: `Attn(W_q L, W_k E, W_v E)`.
    #[default]
    Original,
    /// The context-encoded states query the original ones: `Attn(W_q E, W_k L, W_v L)`.
    Encoded,
}

impl ReasoningQuery {
    /// True at the default (left out of a serialised config then).
    pub fn is_original(&self) -> bool {
        *self == Self::Original
    }
}

/// Switches and sizes of the CP-adapter; the defaults are the full adapter of the paper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpAdapterConfig {
    /// Off: `L' = L` (Table 4, row 1).
    pub enabled: bool,
    /// The CP-adapter or VPD's text adapter.
    #[serde(skip_serializing_if = "AdapterKind::is_cp")]
    pub kind: AdapterKind,
    /// Component 1: the transformer encoder.
    pub global_context: bool,
    /// Encoder layers: the paper's "multiple layers" (section 3.3) give no number; 2 is the
    /// smallest reading of them (docs/DESIGN.md, section 2).
    pub layers: usize,
    /// Heads of the encoder and of the reasoning attention.
    pub heads: usize,
    /// Hidden width of the encoder's feed-forward.
    pub ffn_dim: usize,
    /// Dropout of the encoder and of the reasoning attention.
    pub dropout: f64,
    /// Component 2: object-aware reasoning.
    pub object_reasoning: bool,
    /// Who queries whom in component 2.
    #[serde(skip_serializing_if = "ReasoningQuery::is_original")]
    pub reasoning_query: ReasoningQuery,
    /// Component 3: domain-specific (low-rank) adjustment.
    pub domain_adjustment: bool,
    /// Rank of the low-rank branch.
    pub rank: usize,
    /// Initial value of every entry of `gamma` (VPD's text adapter uses 1e-4).
    pub gamma_init: f64,
}

impl Default for CpAdapterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            kind: AdapterKind::Cp,
            global_context: true,
            layers: 2,
            heads: 8,
            ffn_dim: 2048,
            dropout: 0.1,
            object_reasoning: true,
            reasoning_query: ReasoningQuery::Original,
            domain_adjustment: true,
            rank: 8,
            gamma_init: 1e-4,
        }
    }
}

impl CpAdapterConfig {
    /// Checks the sizes against the text width `text_dim`; the error names the field.
    pub fn validate(&self, text_dim: usize) -> Result<(), ConfigError> {
        if !self.enabled || self.kind == AdapterKind::Vpd {
            return Ok(());
        }
        if self.global_context || self.object_reasoning {
            ensure(
                self.heads > 0 && text_dim.is_multiple_of(self.heads),
                "heads",
                || format!("{} does not divide the text width ({text_dim})", self.heads),
            )?;
            ensure((0.0..1.0).contains(&self.dropout), "dropout", || {
                format!("{} is not in [0, 1)", self.dropout)
            })?;
        }
        if self.global_context {
            ensure(self.layers > 0, "layers", || "must be at least 1".into())?;
            ensure(self.ffn_dim > 0, "ffn_dim", || "must be at least 1".into())?;
        }
        if self.domain_adjustment {
            ensure(self.rank > 0, "rank", || "must be at least 1".into())?;
        }
        Ok(())
    }
}

/// Two-layer ReLU MLP of the reasoning step.
#[derive(Module, Debug)]
pub struct ReasoningMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// Component 2.
#[derive(Module, Debug)]
pub struct ObjectReasoning<B: Backend> {
    pub attention: MultiHeadAttention<B>,
    pub mlp: ReasoningMlp<B>,
}

/// Component 3: `x + up(down(x))`, `up` zero-initialised.
#[derive(Module, Debug)]
pub struct LowRank<B: Backend> {
    pub down: Linear<B>,
    pub up: Linear<B>,
}

/// VPD's text adapter: `fc2(gelu(fc1(L)))`.
#[derive(Module, Debug)]
pub struct VpdMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

/// The CP-adapter (all parts optional; see [`CpAdapterConfig`]), or VPD's text adapter.
#[derive(Module, Debug)]
pub struct CpAdapter<B: Backend> {
    pub encoder: Option<TransformerEncoder<B>>,
    pub reasoning: Option<ObjectReasoning<B>>,
    pub low_rank: Option<LowRank<B>>,
    /// Who queries whom in component 2.
    #[module(skip)]
    reasoning_query: ReasoningQuery,
    /// Present for `kind: vpd` only (then the three components above are absent).
    pub vpd: Option<VpdMlp<B>>,
    /// `[d]`; absent when the adapter is off.
    pub gamma: Option<Param<Tensor<B, 1>>>,
}

impl CpAdapterConfig {
    /// Builds the adapter for text states of width `d_model`.
    pub fn init<B: Backend>(&self, d_model: usize, device: &B::Device) -> CpAdapter<B> {
        let vpd = (self.enabled && self.kind == AdapterKind::Vpd).then(|| VpdMlp {
            fc1: LinearConfig::new(d_model, d_model).init(device),
            fc2: LinearConfig::new(d_model, d_model).init(device),
        });
        let on = self.enabled && self.kind == AdapterKind::Cp;
        let encoder = (on && self.global_context).then(|| {
            TransformerEncoderConfig::new(d_model, self.ffn_dim, self.heads, self.layers)
                .with_dropout(self.dropout)
                .with_norm_first(false)
                .with_activation(ActivationConfig::Relu)
                .init(device)
        });
        let reasoning = (on && self.object_reasoning).then(|| ObjectReasoning {
            attention: MultiHeadAttentionConfig::new(d_model, self.heads)
                .with_dropout(self.dropout)
                .init(device),
            mlp: ReasoningMlp {
                fc1: LinearConfig::new(d_model, d_model).init(device),
                fc2: LinearConfig::new(d_model, d_model).init(device),
            },
        });
        let low_rank = (on && self.domain_adjustment).then(|| LowRank {
            down: LinearConfig::new(d_model, self.rank)
                .with_bias(false)
                .init(device),
            up: LinearConfig::new(self.rank, d_model)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(device),
        });
        let gamma = self.enabled.then(|| {
            Initializer::Constant {
                value: self.gamma_init,
            }
            .init([d_model], device)
        });
        CpAdapter {
            encoder,
            reasoning,
            low_rank,
            reasoning_query: self.reasoning_query,
            vpd,
            gamma,
        }
    }
}

impl<B: Backend> CpAdapter<B> {
    /// The refined states `F_d` before the gated fusion (equal to `L` when every component is
    /// off; VPD's `fc2(gelu(fc1(L)))` for `kind: vpd`).
    ///
    /// # Shapes
    /// `[B, T, D]` -> `[B, T, D]`.
    pub fn adjusted(&self, text: Tensor<B, 3>) -> Tensor<B, 3> {
        if let Some(mlp) = &self.vpd {
            return mlp.fc2.forward(gelu(mlp.fc1.forward(text)));
        }
        let encoded = match &self.encoder {
            Some(enc) => enc.forward(TransformerEncoderInput::new(text.clone())),
            None => text.clone(),
        };
        let reasoned = match &self.reasoning {
            Some(r) => {
                let (query, keys) = match self.reasoning_query {
                    ReasoningQuery::Original => (text.clone(), encoded),
                    ReasoningQuery::Encoded => (encoded, text.clone()),
                };
                let attn = r
                    .attention
                    .forward(MhaInput::new(query, keys.clone(), keys))
                    .context;
                let f = text + attn;
                let mlp = r.mlp.fc2.forward(relu(r.mlp.fc1.forward(f.clone())));
                f + mlp
            }
            None => encoded,
        };
        match &self.low_rank {
            Some(lr) => reasoned.clone() + lr.up.forward(lr.down.forward(reasoned)),
            None => reasoned,
        }
    }

    /// `L' = L + gamma * F_d`, or `L` itself when the adapter is off.
    ///
    /// # Shapes
    /// `[B, T, D]` -> `[B, T, D]`.
    pub fn forward(&self, text: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.gamma {
            Some(gamma) => {
                let d = gamma.dims()[0];
                let gate = gamma.val().reshape([1, 1, d]);
                text.clone() + self.adjusted(text) * gate
            }
            None => text,
        }
    }
}

#[cfg(test)]
mod tests;
