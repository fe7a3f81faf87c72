//! The OAQIL's settings where the paper leaves them open: the temperature's parametrisation and
//! the layout details in which CGFormer's released code differs from the paper's reading.

use serde::{Deserialize, Serialize};

/// The parametrisation of OAQIL's Gumbel-softmax temperature `tau` (paper Eqs. 17-20).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Temperature {
    /// `tau = exp(tau_p)` with `tau_p` learned from `ln(tau_init)`: every step's gradient
    /// reaches it, as the paper's "learnable coefficient" asks.
    #[default]
    Learned,
    /// CGFormer's code: `tau = exp(min(tau_p, 0))` with `tau_p` starting at `tau_init` (1 there).
    /// At `tau_p >= 0` the clamp passes no gradient, so tau stays 1 for the whole run (only
    /// weight decay moves `tau_p`, towards 0 and no further).
    ClampedCgformer,
}

/// How the OAQILs are laid out where the paper's equations (14-20) leave it open or CGFormer's
/// released code (`model/layers.py`: `LoadLayer`, `LoadToken`, `CGAttention`, `Decoder`) reads
/// otherwise. The defaults are diffris' reading of the paper; each field's CGFormer value is
/// given beside it (`docs/DESIGN.md`, section 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OaqilLayout {
    /// Standard deviation of the normal the query tokens start from: 1 (the unit normal of an
    /// embedding table); CGFormer's code: 0.02 (`trunc_normal_`, cut at +-2 absolute, 100 std:
    /// never).
    pub token_std: f64,
    /// How each stage's positional embedding starts.
    pub pos_init: PositionalInit,
    /// Which tokens read the text, at which stages.
    pub text_reading: TextReading,
    /// A residual around the token MLPs: `x + MLP(LN(x))` after the text read and after the
    /// grouping update (on); CGFormer's code replaces the tokens by `MLP(LN(x))` at both.
    pub residual: bool,
    /// Stages 2 and 3 share one grouping attention (its projections, norms, MLP and
    /// temperature), as CGFormer's code runs `cgattention2` twice; off: one per stage.
    pub shared_grouping: bool,
    /// Dropout while training on the text attention's weights and output, the grouping's
    /// output projection and the update MLP (after its activation and its output); 0 here,
    /// 0.1 in CGFormer's code.
    pub dropout: f64,
}

impl Default for OaqilLayout {
    fn default() -> Self {
        Self {
            token_std: 1.0,
            pos_init: PositionalInit::Normal(0.02),
            text_reading: TextReading::EveryToken,
            residual: true,
            shared_grouping: false,
            dropout: 0.0,
        }
    }
}

impl OaqilLayout {
    /// CGFormer's released code, every field at its value there.
    pub fn cgformer_code() -> Self {
        Self {
            token_std: 0.02,
            pos_init: PositionalInit::InverseSqrtWidth,
            text_reading: TextReading::ReferentLate,
            residual: false,
            shared_grouping: true,
            dropout: 0.1,
        }
    }

    /// True at the defaults (the field is left out of a serialised config then, so configs
    /// written before it existed read back unchanged).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The positional embedding's initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionalInit {
    /// A normal of this standard deviation (diffris: 0.02, ViT's).
    Normal(f64),
    /// A normal of standard deviation `1 / sqrt(D)` (CGFormer's `randn(...) / token_dim ** 0.5`).
    InverseSqrtWidth,
}

impl PositionalInit {
    /// The standard deviation for embeddings of width `width`.
    pub fn std(&self, width: usize) -> f64 {
        match self {
            Self::Normal(std) => *std,
            Self::InverseSqrtWidth => (width as f64).powf(-0.5),
        }
    }
}

/// Which query tokens read the text in eq. 14-15, and where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextReading {
    /// Every token, at every stage: the paper's "enabling each query token to focus on the
    /// relevant linguistic information required at the current layer".
    #[default]
    EveryToken,
    /// CGFormer's code ("updated version" `LoadToken`): only the referent (last) token reads the
    /// text, and only at stages 2 and 3 (`LoadLayer` skips the text at its first, 30x30 stage);
    /// the MLP after the read then runs over every token.
    ReferentLate,
}
