//! The adaptive rotated convolution of RMSIN's OAD decoder (after ARC, "Adaptive Rotated
//! Convolution for Rotated Object Detection"; RMSIN's `arc/adaptive_rotated_conv.py` and
//! `arc/routing_function.py`): `n` 3x3 kernels; a routing branch (depthwise 3x3 convolution,
//! layer norm over channels, ReLU, global average pooling) predicts, per sample, an angle
//! `theta_i = softsign(.) * max_angle` and a gate `alpha_i = sigmoid(.)` for each, each from its
//! own linear layer behind its own dropout (the angle layer has no bias); every kernel is
//! rotated by its angle as ARC's `_get_rotation_matrix` rotates it ([`rotation_matrices`]), the
//! rotated kernels are summed with their gates, and the per-sample kernel is applied as a
//! grouped convolution with one group per sample.
//!
//! Initialisation as RMSIN's: the routing layers' weights normal with std 0.02 (RMSIN's
//! `trunc_normal_` cuts at +-2 absolute, a hundred standard deviations, so never) and their
//! gate's bias as PyTorch initialises it (RMSIN does not touch it: uniform within
//! `1 / sqrt(fan_in)`; the depthwise convolution and the angle layer have none);
//! the kernels He-normal with PyTorch's `fan_out` of a `[n, C_out, C_in, 3, 3]` tensor, which is
//! `n * C_in * 9` (see `docs/DESIGN.md`).

use crate::norm::batch_norm;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::activation::{relu, sigmoid, softsign};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use diffris_kernels::{SdBackend, permute, sd_conv2d, sd_relu, swap_dims};

/// Offsets `(x, y)` of the 3x3 taps in row-major order (`y` grows downwards).
const TAPS: [(f32, f32); 9] = [
    (-1.0, -1.0),
    (0.0, -1.0),
    (1.0, -1.0),
    (-1.0, 0.0),
    (0.0, 0.0),
    (1.0, 0.0),
    (-1.0, 1.0),
    (0.0, 1.0),
    (1.0, 1.0),
];

/// Per-sample 9x9 matrices `M` with `rotated = M . taps`, as ARC's `_get_rotation_matrix`:
/// tap `p` of the rotated kernel takes the original kernel's value at `R(theta) p` (with `x`
/// to the right and `y` downwards, `R(theta) (x, y) = (x cos - y sin, x sin + y cos)`), the point
/// clamped into the 3x3 grid and bilinearly interpolated. ARC writes its matrix out entry by
/// entry, one for positive and one for negative angles; for `|theta| <= 45°` (the routing keeps
/// `|theta|` below its maximum angle, at most 45°) that matrix is exactly this clamped
/// interpolation: edge taps interpolate inside the grid, and a corner tap, whose rotated point
/// leaves the grid, interpolates along the border between its two neighbours. So every row is a
/// convex combination (a rotated kernel keeps its sum), unlike interpolation with zeros outside
/// the grid, whose corner taps lose weight (the test at 10-40° checks the values).
///
/// # Shapes
/// `theta` (radians): `[B]` -> `[B, 9, 9]`.
pub fn rotation_matrices<B: SdBackend>(theta: Tensor<B, 1>) -> Tensor<B, 3> {
    let b = theta.dims()[0];
    let device = theta.device();
    let (cos, sin) = (
        theta.clone().cos().reshape([b, 1, 1]),
        theta.sin().reshape([b, 1, 1]),
    );
    let px = Tensor::<B, 1>::from_floats(TAPS.map(|t| t.0), &device).reshape([1, 9, 1]);
    let py = Tensor::<B, 1>::from_floats(TAPS.map(|t| t.1), &device).reshape([1, 9, 1]);
    let qx = px.clone().reshape([1, 1, 9]);
    let qy = py.clone().reshape([1, 1, 9]);
    // Source of target tap p: R(theta) p = (x cos - y sin, x sin + y cos), clamped to the grid.
    let sx = (px.clone() * cos.clone() - py.clone() * sin.clone()).clamp(-1.0, 1.0);
    let sy = (px * sin + py * cos).clamp(-1.0, 1.0);
    let wx = (sx - qx).abs().neg().add_scalar(1.0).clamp_min(0.0);
    let wy = (sy - qy).abs().neg().add_scalar(1.0).clamp_min(0.0);
    wx * wy
}

/// A bias of `n` values as PyTorch's `Linear` and `Conv2d` initialise it: uniform in
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`.
fn pytorch_bias<B: SdBackend>(fan_in: usize, n: usize, device: &B::Device) -> Param<Tensor<B, 1>> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init([n], device)
}

/// Rotated, gated 3x3 conv (a mixture of `n` kernels) -> BN -> ReLU.
#[derive(Module, Debug)]
pub struct RotatedConvBnRelu<B: SdBackend> {
    /// `[n * C_out, C_in, 3, 3]`: kernel `i` is rows `i * C_out .. (i + 1) * C_out`.
    pub weight: Param<Tensor<B, 4>>,
    pub routing_conv: Conv2d<B>,
    pub routing_norm: LayerNorm<B>,
    /// The `n` angles (no bias).
    pub routing_theta: Linear<B>,
    /// The `n` gates.
    pub routing_alpha: Linear<B>,
    pub bn: BatchNorm<B>,
    max_angle: f64,
    routing_dropout: f64,
}

/// Weights normal with std 0.02 (the routing layers' initialisation in RMSIN).
const ROUTING_INIT: Initializer = Initializer::Normal {
    mean: 0.0,
    std: 0.02,
};

impl<B: SdBackend> RotatedConvBnRelu<B> {
    /// A mixture of `kernels` rotated kernels from `cin` to `cout` channels, with dropout of
    /// probability `routing_dropout` in front of the routing branch's two linear layers while
    /// training.
    pub fn new(
        cin: usize,
        cout: usize,
        kernels: usize,
        max_angle_deg: f64,
        routing_dropout: f64,
        device: &B::Device,
    ) -> Self {
        // He-normal for ReLU (gain sqrt 2) with PyTorch's fan_out of ARC's 5-D weight:
        // dim 0 (the kernel count) times the product of the dims after the second.
        let fan_out = kernels * cin * 9;
        let weight = Initializer::Normal {
            mean: 0.0,
            std: (2.0 / fan_out as f64).sqrt(),
        }
        .init([kernels * cout, cin, 3, 3], device);
        let routing_conv = Conv2dConfig::new([cin, cin], [3, 3])
            .with_groups(cin)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .with_initializer(ROUTING_INIT)
            .init(device);
        // The gate's bias as PyTorch initialises it (RMSIN leaves it be): uniform within
        // `1 / sqrt(fan_in)`. The depthwise convolution has none (ARC's `bias=False`).
        let mut routing_alpha = LinearConfig::new(cin, kernels)
            .with_initializer(ROUTING_INIT)
            .init(device);
        routing_alpha.bias = Some(pytorch_bias(cin, kernels, device));
        Self {
            weight,
            routing_conv,
            routing_norm: LayerNormConfig::new(cin).init(device),
            routing_theta: LinearConfig::new(cin, kernels)
                .with_bias(false)
                .with_initializer(ROUTING_INIT)
                .init(device),
            routing_alpha,
            bn: BatchNormConfig::new(cout).init(device),
            max_angle: max_angle_deg.to_radians(),
            routing_dropout,
        }
    }

    /// Inverted dropout (kept values scaled by `1 / (1 - p)`), in training only.
    fn dropout(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        let p = self.routing_dropout;
        if !training || p == 0.0 {
            return x;
        }
        let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
        x * keep.div_scalar(1.0 - p)
    }

    /// Per-sample angles (radians) and gates of the `n` kernels, from the routing branch;
    /// `training` turns its dropout on.
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> (`[B, n]`, `[B, n]`).
    pub fn route(&self, x: Tensor<B, 4>, training: bool) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [b, c, _, _] = x.dims();
        let r = sd_conv2d(&self.routing_conv, x);
        // LayerNorm over channels at every pixel, then ReLU and global average pooling.
        let r = permute(
            self.routing_norm.forward(permute(r, [0, 2, 3, 1])),
            [0, 3, 1, 2],
        );
        let pooled = relu(r).mean_dim(3).mean_dim(2).reshape([b, c]);
        // Each linear layer behind its own dropout mask, as RMSIN's two `nn.Dropout`s.
        let alpha = sigmoid(
            self.routing_alpha
                .forward(self.dropout(pooled.clone(), training)),
        );
        let theta = softsign(self.routing_theta.forward(self.dropout(pooled, training)))
            .mul_scalar(self.max_angle);
        (theta, alpha)
    }

    /// The rotated, gated convolution without BN/ReLU, for given angles and gates: per sample,
    /// `sum_i alpha_i rotate(W_i, theta_i)` as the kernel.
    ///
    /// # Shapes
    /// `x`: `[B, C_in, H, W]`, `theta`, `alpha`: `[B, n]` -> `[B, C_out, H, W]`.
    pub fn rotated_conv(
        &self,
        x: Tensor<B, 4>,
        theta: Tensor<B, 2>,
        alpha: Tensor<B, 2>,
    ) -> Tensor<B, 4> {
        let [b, cin, h, w] = x.dims();
        let n = theta.dims()[1];
        let weight = self.weight.val();
        let cout = weight.dims()[0] / n;
        let m = rotation_matrices(theta.reshape([b * n]));
        let taps = weight
            .reshape([1, n, cout * cin, 9])
            .expand([b, n, cout * cin, 9])
            .reshape([b * n, cout * cin, 9]);
        let rotated = taps.matmul(swap_dims(m, 1, 2)) * alpha.reshape([b * n, 1, 1]);
        let kernels =
            rotated
                .reshape([b, n, cout * cin * 9])
                .sum_dim(1)
                .reshape([b * cout, cin, 3, 3]);
        let grouped = conv2d(
            x.reshape([1, b * cin, h, w]),
            kernels,
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], b),
        );
        grouped.reshape([b, cout, h, w])
    }

    /// `training`: batch statistics under autodiff (see [`batch_norm`]).
    ///
    /// # Shapes
    /// `[B, C_in, H, W]` -> `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, training: bool) -> Tensor<B, 4> {
        let (theta, alpha) = self.route(x.clone(), training);
        sd_relu(batch_norm(
            &self.bn,
            self.rotated_conv(x, theta, alpha),
            training,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    #[test]
    fn angle_zero_and_gate_one_is_a_plain_conv() {
        let device = Default::default();
        let layer = RotatedConvBnRelu::<B>::new(3, 4, 1, 40.0, 0.2, &device);
        let x = Tensor::<B, 4>::random([2, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let zero = Tensor::<B, 2>::zeros([2, 1], &device);
        let one = Tensor::<B, 2>::ones([2, 1], &device);
        let got = layer.rotated_conv(x.clone(), zero, one);
        let want = conv2d(
            x,
            layer.weight.val(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    /// The mixture is linear in its kernels: per sample, the convolution with
    /// `sum_i alpha_i rotate(W_i, theta_i)`. Checked against a plain convolution with that
    /// kernel built by hand: unrotated kernels with gates 0.5, 2, -1 for sample 0, and for
    /// sample 1 kernel 1 alone, turned by 90 degrees (its taps moved a quarter turn; beyond the
    /// routing's 45° the sampling is still a rotation, which makes the case exact).
    #[test]
    fn kernels_mix_by_their_gates_each_rotated_by_its_angle() {
        let device = Default::default();
        let (cin, cout, n) = (2, 3, 3);
        let layer = RotatedConvBnRelu::<B>::new(cin, cout, n, 40.0, 0.2, &device);
        let x = Tensor::<B, 4>::random([2, cin, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let quarter = std::f32::consts::FRAC_PI_2;
        let theta = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.0, 0.0, 0.0, 0.0, quarter, 0.0], [2, n]),
            &device,
        );
        let alpha = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.5f32, 2.0, -1.0, 0.0, 1.0, 0.0], [2, n]),
            &device,
        );
        let got = layer.rotated_conv(x.clone(), theta, alpha);
        let w: Vec<f32> = layer.weight.val().into_data().to_vec().unwrap();
        let per = cout * cin * 9;
        let kernel = |i: usize| &w[i * per..(i + 1) * per];
        let mixed: Vec<f32> = (0..per)
            .map(|j| 0.5 * kernel(0)[j] + 2.0 * kernel(1)[j] - kernel(2)[j])
            .collect();
        // A quarter turn: tap p takes the value at R(90°) p = (-p_y, p_x), so the tap at
        // (x, y) goes to (y, -x) (y grows downwards).
        let mut turned = vec![0f32; per];
        for (k, chunk) in kernel(1).chunks(9).enumerate() {
            for (t, &(tx, ty)) in TAPS.iter().enumerate() {
                let to = TAPS
                    .iter()
                    .position(|&(ux, uy)| ux == ty && uy == -tx)
                    .unwrap();
                turned[k * 9 + to] = chunk[t];
            }
        }
        let conv = |x: Tensor<B, 4>, k: Vec<f32>| {
            let k = Tensor::<B, 4>::from_data(TensorData::new(k, [cout, cin, 3, 3]), &device);
            conv2d(x, k, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
        };
        for (s, k) in [(0, mixed), (1, turned)] {
            let want = conv(x.clone().narrow(0, s, 1), k);
            let diff: f32 = (got.clone().narrow(0, s, 1) - want)
                .abs()
                .max()
                .into_scalar();
            assert!(diff < 1e-5, "sample {s}: {diff}");
        }
    }

    #[test]
    fn ninety_degrees_moves_taps_by_a_quarter_turn() {
        let device = Default::default();
        let theta = Tensor::<B, 1>::from_floats([std::f32::consts::FRAC_PI_2], &device);
        let m = rotation_matrices(theta);
        // A kernel with a single 1 at the right tap (x=1, y=0; index 5).
        let mut k = vec![0f32; 9];
        k[5] = 1.0;
        let k = Tensor::<B, 3>::from_data(TensorData::new(k, [1, 1, 9]), &device);
        let rotated: Vec<f32> = k.matmul(swap_dims(m, 1, 2)).into_data().to_vec().unwrap();
        // Tap p takes the value at R(90°) p: the top tap p = (0, -1) reads (1, 0), so the right
        // tap's value moves to the top (index 1), y growing downwards.
        for (i, v) in rotated.iter().enumerate() {
            let want = if i == 1 { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-6, "tap {i}: {v} ({rotated:?})");
        }
        // The centre tap stays put under any rotation.
        let theta = Tensor::<B, 1>::from_floats([0.3], &device);
        let m: Vec<f32> = rotation_matrices(theta).into_data().to_vec().unwrap();
        assert!((m[4 * 9 + 4] - 1.0).abs() < 1e-6);
    }

    /// ARC's `_get_rotation_matrix`, transcribed entry by entry (rows: target taps, columns:
    /// source taps, row-major 3x3 order), with `x = cos`, `y = sin`, `a = x - y`, `b = x y`,
    /// `c = x + y`: one matrix for `theta >= 0`, another for `theta < 0`.
    fn arc_matrix(theta: f64) -> [[f64; 9]; 9] {
        let (x, y) = (theta.cos(), theta.sin());
        let (a, b, c) = (x - y, x * y, x + y);
        let o = 0.0;
        if theta >= 0.0 {
            [
                [a, 1.0 - a, o, o, o, o, o, o, o],
                [o, x - b, b, o, 1.0 - c + b, y - b, o, o, o],
                [o, o, a, o, o, 1.0 - a, o, o, o],
                [b, y - b, o, x - b, 1.0 - c + b, o, o, o, o],
                [o, o, o, o, 1.0, o, o, o, o],
                [o, o, o, o, 1.0 - c + b, x - b, o, y - b, b],
                [o, o, o, 1.0 - a, o, o, a, o, o],
                [o, o, o, y - b, 1.0 - c + b, o, b, x - b, o],
                [o, o, o, o, o, o, o, 1.0 - a, a],
            ]
        } else {
            [
                [c, o, o, 1.0 - c, o, o, o, o, o],
                [-b, x + b, o, b - y, 1.0 - a - b, o, o, o, o],
                [o, 1.0 - c, c, o, o, o, o, o, o],
                [o, o, o, x + b, 1.0 - a - b, o, -b, b - y, o],
                [o, o, o, o, 1.0, o, o, o, o],
                [o, b - y, -b, o, 1.0 - a - b, x + b, o, o, o],
                [o, o, o, o, o, o, c, 1.0 - c, o],
                [o, o, o, o, 1.0 - a - b, b - y, o, x + b, -b],
                [o, o, o, o, o, 1.0 - c, o, o, c],
            ]
        }
    }

    /// The rotation is ARC's matrix at the angles OAD's routing produces (up to 40° either way),
    /// and each row a convex combination: the zero-padded interpolation it replaced gave the
    /// corner taps of a rotated kernel only 0.84, 0.72 and 0.59 of their weight at 10, 20 and 40°.
    #[test]
    fn rotation_is_arcs_matrix_between_minus_and_plus_forty_degrees() {
        let device = Default::default();
        let degrees = [
            -40.0, -30.0, -20.0, -10.0, -1.0, 0.0, 1.0, 10.0, 20.0, 30.0, 40.0, 45.0,
        ];
        let theta: Vec<f32> = degrees
            .iter()
            .map(|d: &f64| d.to_radians() as f32)
            .collect();
        let m: Vec<f32> = rotation_matrices(Tensor::<B, 1>::from_floats(theta.as_slice(), &device))
            .into_data()
            .to_vec()
            .unwrap();
        for (k, &deg) in degrees.iter().enumerate() {
            // ARC's entries from the f32 angle the model computes with.
            let want = arc_matrix(theta[k] as f64);
            for (p, row) in want.iter().enumerate() {
                let got = &m[k * 81 + p * 9..k * 81 + p * 9 + 9];
                for (q, &w) in row.iter().enumerate() {
                    // f32 trigonometry and products: a few ulp of values at most 1.
                    assert!(
                        (got[q] as f64 - w).abs() < 1e-6,
                        "{deg}°: entry ({p}, {q}) is {} where ARC's matrix has {w}",
                        got[q]
                    );
                }
                let sum: f32 = got.iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-6 && got.iter().all(|&v| v >= -1e-7),
                    "{deg}° row {p}: {got:?}"
                );
            }
        }
    }

    /// OAD's routing dropout is active in training only, and draws a new mask on every call.
    #[test]
    fn oad_routing_dropout_acts_in_training_only() {
        let device = Default::default();
        B::seed(&device, 9);
        let with = RotatedConvBnRelu::<B>::new(16, 8, 4, 40.0, 0.5, &device);
        let x = Tensor::<B, 4>::random([3, 16, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        let values = |(theta, alpha): (Tensor<B, 2>, Tensor<B, 2>)| -> Vec<f32> {
            Tensor::cat(vec![theta, alpha], 1)
                .into_data()
                .to_vec()
                .unwrap()
        };
        let eval = values(with.route(x.clone(), false));
        assert_eq!(
            eval,
            values(with.route(x.clone(), false)),
            "eval is deterministic"
        );
        let train = values(with.route(x.clone(), true));
        assert_ne!(eval, train, "training drops routing features");
        assert_ne!(
            train,
            values(with.route(x.clone(), true)),
            "a new mask per call"
        );
        // Without dropout, training and eval route alike.
        let without = RotatedConvBnRelu::<B> {
            routing_dropout: 0.0,
            ..with
        };
        assert_eq!(
            values(without.route(x.clone(), true)),
            values(without.route(x, false))
        );
    }

    /// RMSIN's initialisation of the adaptive rotated convolution: kernels He-normal with the fan
    /// PyTorch computes for ARC's `[n, C_out, C_in, 3, 3]` weight in `fan_out` mode
    /// (`n * C_in * 9`), routing weights normal with std 0.02, the angle layer without bias, the
    /// depthwise convolution without bias, the gate's bias PyTorch's default (uniform within
    /// `1 / sqrt(fan_in)`).
    #[test]
    fn oad_starts_from_rmsins_initialisation() {
        let device = Default::default();
        B::seed(&device, 10);
        let (cin, cout, n) = (64, 64, 4);
        let layer = RotatedConvBnRelu::<B>::new(cin, cout, n, 40.0, 0.2, &device);
        let std = |t: Tensor<B, 1>| -> f64 {
            let v: Vec<f32> = t.into_data().to_vec().unwrap();
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let want = (2.0 / (n * cin * 9) as f64).sqrt();
        let got = std(layer.weight.val().flatten(0, 3));
        // 147,456 draws: the sample std is within 1% of the true one with overwhelming probability.
        assert!(
            (got / want - 1.0).abs() < 0.01,
            "kernel std {got} vs {want}"
        );
        let fc = std(layer.routing_alpha.weight.val().flatten(0, 1));
        // 256 draws: within 20% (about 3 standard errors).
        assert!((fc / 0.02 - 1.0).abs() < 0.2, "routing std {fc}");
        assert!(layer.routing_theta.bias.is_none());
        let values =
            |b: &Param<Tensor<B, 1>>| -> Vec<f32> { b.val().into_data().to_vec().unwrap() };
        assert!(layer.routing_conv.bias.is_none());
        let gate = values(layer.routing_alpha.bias.as_ref().unwrap());
        let bound = 1.0 / (cin as f32).sqrt();
        assert!(
            gate.iter().all(|v| v.abs() <= bound),
            "{gate:?} beyond {bound}"
        );
        // Four uniform draws: not all near zero.
        let spread = gate.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(spread > 0.1 * bound, "{gate:?}");
    }
}
