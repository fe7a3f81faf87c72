//! The layout of a group or layer normalisation as rows of contiguous elements, shared by the
//! normalisation operation of [`SdBackend`](super::SdBackend) and its CPU kernel.

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
