//! The layout of a group or layer normalisation as rows of contiguous elements, shared by the
//! normalisation operation of [`SdBackend`](super::SdBackend) and its CPU kernel.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

/// How `x` divides into normalisation rows: `rows` rows of `channels * spatial` contiguous
/// elements, each channel a run of `spatial` elements, and row `r` taking its affine
/// parameters from row `r % groups` of `gamma` / `beta` `[groups, channels]`.
///
/// Group norm of `[B, C, H, W]` in `G` groups: `rows = B * G`, `groups = G`,
/// `channels = C / G`, `spatial = H * W`. Layer norm over the last axis `C`: `rows` = the
/// number of vectors, `groups = 1`, `channels = C`, `spatial = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub rows: usize,
    pub groups: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl Rows {
    /// Elements per row.
    pub fn len(&self) -> usize {
        self.channels * self.spatial
    }

    /// Whether the rows are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The affine parameters' index of channel `c` of row `r`.
    pub fn param(&self, r: usize, c: usize) -> usize {
        (r % self.groups) * self.channels + c
    }
}

/// The group and layer normalisations of the SD stack, by a backend kernel where it has one.
pub trait NormOps: Backend {
    /// Group or layer normalisation, `(x - mean) / sqrt(var + eps) * gamma + beta` per row of
    /// `rows` (biased variance), by a kernel of the backend: `None` where the backend has none
    /// for these inputs, and the caller composes Burn's operations. The default asks
    /// [`sd_norm_forward`](Self::sd_norm_forward); `Autodiff<B>` makes a frozen `gamma` /
    /// `beta`'s normalisation one node that keeps `x` and the row statistics, with
    /// [`sd_norm_backward`](Self::sd_norm_backward) as its backward.
    ///
    /// # Shapes
    /// `x`: `rows.rows * rows.len()` elements in any shape, `gamma`, `beta`: `[groups *
    /// channels]` -> the shape of `x`.
    fn sd_norm(
        x: FloatTensor<Self>,
        gamma: Option<FloatTensor<Self>>,
        beta: Option<FloatTensor<Self>>,
        rows: Rows,
        eps: f64,
    ) -> Option<FloatTensor<Self>> {
        Self::sd_norm_forward(x, gamma, beta, rows, eps).map(|(out, _)| out)
    }

    /// The kernel behind [`sd_norm`](Self::sd_norm): the output and per row the mean and
    /// `sqrt(var + eps)`, or `None` (the default: no kernel).
    ///
    /// # Shapes
    /// as [`sd_norm`](Self::sd_norm), and `[rows]` twice.
    fn sd_norm_forward(
        _x: FloatTensor<Self>,
        _gamma: Option<FloatTensor<Self>>,
        _beta: Option<FloatTensor<Self>>,
        _rows: Rows,
        _eps: f64,
    ) -> Option<(FloatTensor<Self>, [FloatTensor<Self>; 2])> {
        None
    }

    /// The gradient of [`sd_norm_forward`](Self::sd_norm_forward)'s input given its output's
    /// gradient and its statistics `[mean, std]`. Only called on a backend whose
    /// `sd_norm_forward` gave `Some`; the default panics.
    ///
    /// # Shapes
    /// `x`, `grad`: as `x` of the forward, `stats`: `[rows]` each -> the shape of `x`.
    fn sd_norm_backward(
        _x: FloatTensor<Self>,
        _stats: [FloatTensor<Self>; 2],
        _gamma: Option<FloatTensor<Self>>,
        _rows: Rows,
        _grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("sd_norm_backward is only called where sd_norm_forward has a kernel")
    }
}
