//! Multi-head attention whose heads together are wider than the model: queries, keys and values
//! are projected from `D` to `A` channels (`heads` heads of `A / heads`), and the output from `A`
//! back to `D`. CARIS's vision-language layers attend with `A = 1024` inside 256-wide layers;
//! Burn's `MultiHeadAttention` has one width for both.
//!
//! Masked keys get the score -1e4 before the softmax, as in Burn's module, so their weight is 0
//! in f32 wherever one key is not masked.

use crate::sd::attention::{merge_heads, split_heads};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};
use diffris_kernels::{SdBackend, swap_dims};

/// Score given to masked keys (Burn's `min_float`).
const MASKED: f64 = -1.0e4;

/// Attention with `heads` heads of width `A / heads` between `D`-wide inputs and output.
#[derive(Module, Debug)]
pub struct WideAttention<B: SdBackend> {
    /// `D -> A`.
    pub query: Linear<B>,
    /// `D -> A`.
    pub key: Linear<B>,
    /// `D -> A`.
    pub value: Linear<B>,
    /// `A -> D`.
    pub output: Linear<B>,
    heads: usize,
}

impl<B: SdBackend> WideAttention<B> {
    /// `d` the model width, `inner` the heads' total width `A` (a multiple of `heads`).
    pub fn new(d: usize, inner: usize, heads: usize, device: &B::Device) -> Self {
        Self {
            query: LinearConfig::new(d, inner).init(device),
            key: LinearConfig::new(d, inner).init(device),
            value: LinearConfig::new(d, inner).init(device),
            output: LinearConfig::new(inner, d).init(device),
            heads,
        }
    }

    /// `softmax(q k^T / sqrt(A / heads)) v` per head, keys marked in `pad` ignored.
    ///
    /// # Shapes
    /// `query`: `[B, N, D]`, `key` and `value`: `[B, M, D]`, `pad`: `[B, M]` (true = ignore);
    /// returns `[B, N, D]`.
    pub fn forward(
        &self,
        query: Tensor<B, 3>,
        key: Tensor<B, 3>,
        value: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [b, m, _] = key.dims();
        let q = split_heads(self.query.forward(query), self.heads);
        let k = split_heads(self.key.forward(key), self.heads);
        let v = split_heads(self.value.forward(value), self.heads);
        let head_dim = q.dims()[3];
        let mut scores = q
            .matmul(swap_dims(k, 2, 3))
            .div_scalar((head_dim as f64).sqrt());
        if let Some(pad) = pad {
            scores = scores.mask_fill(pad.reshape([b, 1, 1, m]), MASKED);
        }
        let context = merge_heads(softmax(scores, 3).matmul(v));
        self.output.forward(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    /// At `A = D` it is Burn's `MultiHeadAttention` with the same four linear layers, masked or
    /// not (Burn's module as the independent reference).
    #[test]
    fn at_the_model_width_it_is_burns_multi_head_attention() {
        let device = Default::default();
        B::seed(&device, 11);
        let (d, heads) = (24, 4);
        let burn_mha = MultiHeadAttentionConfig::new(d, heads)
            .with_dropout(0.0)
            .init::<B>(&device);
        let x = Tensor::<B, 3>::random([2, 5, d], Distribution::Normal(0.0, 1.0), &device);
        let c = Tensor::<B, 3>::random([2, 7, d], Distribution::Normal(0.0, 1.0), &device);
        // Burn initialises parameters lazily, and a clone of an uninitialised parameter draws
        // its own values: one forward first, so that the clones below share the weights.
        burn_mha.forward(MhaInput::self_attn(x.clone()));
        let ours = WideAttention::<B> {
            query: burn_mha.query.clone(),
            key: burn_mha.key.clone(),
            value: burn_mha.value.clone(),
            output: burn_mha.output.clone(),
            heads,
        };
        let pad = Tensor::<B, 2, Bool>::from_data(
            TensorData::new(
                [[false; 7], [false, false, false, true, true, true, true]].concat(),
                [2, 7],
            ),
            &device,
        );
        for mask in [None, Some(pad)] {
            let mut input = MhaInput::new(x.clone(), c.clone(), c.clone());
            if let Some(p) = mask.clone() {
                input = input.mask_pad(p);
            }
            let masked = mask.is_some();
            let want = burn_mha.forward(input).context;
            let got = ours.forward(x.clone(), c.clone(), c.clone(), mask);
            let diff: f32 = (got - want).abs().max().into_scalar();
            // The same operations in the same order; 1e-6 leaves room for another summation
            // order.
            assert!(diff < 1e-6, "{diff} (masked: {masked})");
        }
    }

    /// Wider heads, by hand: one head of width 2 over a model of width 1, with unit projections
    /// (`q = k = v = x * (1, 1)`, output the sum of both channels): scores `2 x_i x_j / sqrt 2`.
    #[test]
    fn one_wide_head_by_hand() {
        let device = Default::default();
        let mut att = WideAttention::<B>::new(1, 2, 1, &device);
        let set = |l: &mut Linear<B>, w: Vec<f32>, shape: [usize; 2]| {
            l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), &device));
            l.bias = Some(Param::from_tensor(Tensor::zeros([shape[1]], &device)));
        };
        for l in [&mut att.query, &mut att.key, &mut att.value] {
            set(l, vec![1.0, 1.0], [1, 2]);
        }
        set(&mut att.output, vec![1.0, 1.0], [2, 1]);
        let xs = [0.5f32, -1.0, 2.0];
        let x = Tensor::<B, 3>::from_data(TensorData::new(xs.to_vec(), [1, 3, 1]), &device);
        let got: Vec<f32> = att
            .forward(x.clone(), x.clone(), x, None)
            .into_data()
            .to_vec()
            .unwrap();
        for (i, &xi) in xs.iter().enumerate() {
            let scores: Vec<f64> = xs
                .iter()
                .map(|&xj| 2.0 * xi as f64 * xj as f64 / 2f64.sqrt())
                .collect();
            let z: f64 = scores.iter().map(|s| s.exp()).sum();
            // v_j = (x_j, x_j); the output sums the two channels.
            let want: f64 = scores
                .iter()
                .zip(xs)
                .map(|(s, xj)| s.exp() / z * 2.0 * xj as f64)
                .sum();
            assert!(
                (got[i] as f64 - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                got[i]
            );
        }
    }
}
