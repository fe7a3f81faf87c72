//! SiLU, ReLU, GEGLU and the frozen-weight convolution and linear layer of `diffris_kernels` give Burn's own
//! outputs and gradients on the CPU backend (bit for bit, except the stride-1 convolution, which
//! flex runs through a kernel of its own and which agrees to rounding), while keeping less for
//! the backward pass; a convolution with a tracked weight gets Burn's gradients (to rounding on
//! flex's stride-1 kernels).

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{gelu, relu, silu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use diffris_kernels::{sd_conv2d, sd_geglu, sd_linear, sd_relu, sd_silu, sd_transpose};

type AB = Autodiff<Flex>;

/// Values in (-2, 2) from a seeded splitmix64 stream. Not the backend RNG: it is one per process,
/// and the tests of this file run on parallel threads, so a seed-then-draw could interleave with
/// another test's and give the two sides of a comparison different data.
fn random(shape: [usize; 4], seed: u64) -> Tensor<AB, 4> {
    let mut state = seed;
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn data(t: Tensor<Flex, 4>) -> TensorData {
    t.into_data()
}

/// Output and input gradient of `sum(f(x) * w)`.
fn run(f: impl Fn(Tensor<AB, 4>) -> Tensor<AB, 4>, x: &Tensor<AB, 4>) -> (TensorData, TensorData) {
    let x = x.clone().require_grad();
    let out = f(x.clone());
    let w = random(out.dims(), 99);
    let grads = (out.clone() * w).sum().backward();
    (
        data(out.inner()),
        data(x.grad(&grads).expect("x is tracked")),
    )
}

#[test]
fn silu_matches_burn_bit_for_bit() {
    let _rng = crate::burn_rng();
    // 18,432 values: two of the flex kernel's parallel chunks.
    let x = random([2, 4, 48, 48], 1);
    let ours = run(sd_silu, &x);
    let burn = run(silu, &x);
    assert_eq!(ours.0, burn.0, "forward");
    assert_eq!(ours.1, burn.1, "input gradient");
}

/// GEGLU through `x: [B, N, 1, 2I]` as `[B, N, 2I]` -> `[B, N, 1, I]`.
fn geglu_4d(f: impl Fn(Tensor<AB, 3>) -> Tensor<AB, 3>) -> impl Fn(Tensor<AB, 4>) -> Tensor<AB, 4> {
    move |x| {
        let [b, n, _, two_i] = x.dims();
        f(x.reshape([b, n, two_i])).reshape([b, n, 1, two_i / 2])
    }
}

#[test]
fn geglu_matches_burn_bit_for_bit() {
    let _rng = crate::burn_rng();
    let burn = |h: Tensor<AB, 3>| {
        let mut halves = h.chunk(2, 2);
        let gate = halves.pop().expect("two halves");
        let a = halves.pop().expect("two halves");
        a * gelu(gate)
    };
    // 70 rows: several of the flex kernel's parallel tasks.
    let x = random([2, 35, 1, 2 * 24], 5);
    let ours = run(geglu_4d(sd_geglu), &x);
    let burn = run(geglu_4d(burn), &x);
    assert_eq!(ours.0, burn.0, "forward");
    // Burn sums the two halves' zero-padded gradients, which would turn a -0 into +0; with
    // these inputs no gradient element is zero, so the bits agree.
    assert_eq!(ours.1, burn.1, "input gradient");
    // The composed default (other backends) gives the same bits too.
    let default = run(geglu_4d(diffris_kernels::geglu::forward), &x);
    assert_eq!(default.0, burn.0);
    assert_eq!(default.1, burn.1);
}

#[test]
fn relu_matches_burn_bit_for_bit() {
    let _rng = crate::burn_rng();
    // Exact zeros and negative zeros too: the gradient mask must agree at the boundary.
    let x = random([2, 3, 5, 7], 2);
    let x = x.clone().mask_fill(x.clone().abs().lower_elem(0.3), 0.0);
    let x = x.clone().mask_fill(x.clone().greater_elem(1.5), -0.0);
    let ours = run(sd_relu, &x);
    let burn = run(relu, &x);
    assert_eq!(ours.0, burn.0, "forward");
    assert_eq!(ours.1, burn.1, "input gradient");
}

/// SD's convolutions: 3x3 padding 1, 3x3 stride 2 (the UNet's downsampling), 1x1 with bias.
fn convs() -> Vec<Conv2d<AB>> {
    let device = Default::default();
    AB::seed(&device, 3);
    vec![
        Conv2dConfig::new([4, 6], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device),
        Conv2dConfig::new([4, 4], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device),
        Conv2dConfig::new([4, 8], [1, 1]).init(&device),
    ]
}

/// Largest difference between `a` and `b` relative to `b`'s largest magnitude.
fn relative_difference(a: &TensorData, b: &TensorData) -> f32 {
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    worst / scale
}

#[test]
fn frozen_convolution_matches_burn() {
    let _rng = crate::burn_rng();
    // Odd and even sizes: the stride-2 case needs the output padding of the transposed conv.
    for (h, w) in [(9, 8), (8, 8)] {
        let x = random([2, 4, h, w], 5);
        for conv in convs() {
            let conv = conv.no_grad();
            let ours = run(|x| sd_conv2d(&conv, x), &x);
            let burn = run(|x| conv.forward(x), &x);
            let case = format!("{h}x{w}, stride {:?}", conv.stride);
            if conv.stride == [1, 1] {
                // Flex's own kernel (ops::cpu::conv) sums in another order than Burn's
                // im2col: sums of 9 to 36 products of values below 2 in magnitude agree to a
                // few f32 ulps of the output's scale (6e-8 each).
                let (forward, input) = (
                    relative_difference(&ours.0, &burn.0),
                    relative_difference(&ours.1, &burn.1),
                );
                assert!(forward < 1e-6, "forward, {case}: {forward}");
                assert!(input < 1e-6, "input gradient, {case}: {input}");
            } else {
                // Other strides keep Burn's convolution and its gradient formula.
                assert_eq!(ours.0, burn.0, "forward, {case}");
                assert_eq!(ours.1, burn.1, "input gradient, {case}");
            }
            // The default input gradient (every backend but flex) is Burn's formula, bit for bit.
            let [_, _, oh, ow] = conv.forward(x.clone()).dims();
            let weight = conv.weight.val().inner().into_primitive().tensor();
            let grad = random([2, conv.weight.dims()[0], oh, ow], 99).inner();
            let options = burn::tensor::ops::ConvOptions::new(
                conv.stride,
                match conv.padding {
                    PaddingConfig2d::Explicit(top, left, _, _) => [top, left],
                    _ => [0, 0],
                },
                conv.dilation,
                conv.groups,
            );
            let default = diffris_kernels::conv2d_input_grad_burn::<Flex>(
                grad.into_primitive().tensor(),
                weight,
                [h, w],
                options,
            );
            let default = data(Tensor::from_primitive(
                burn::tensor::TensorPrimitive::Float(default),
            ));
            assert_eq!(default, burn.1, "default input gradient, {case}");
        }
    }
}

/// A trained convolution (tracked weight and bias): flex runs stride-1 shapes as one node of its
/// kernels (forward, input and weight gradients; the bias's by Burn's formula), which agree with
/// Burn's autodiff `conv2d` to rounding; stride 2 keeps Burn's node, bit for bit.
#[test]
fn trained_convolution_matches_burn() {
    let _rng = crate::burn_rng();
    let x = random([2, 4, 8, 8], 6);
    for conv in convs() {
        let parts = |f: &dyn Fn(Tensor<AB, 4>) -> Tensor<AB, 4>| {
            let x = x.clone().require_grad();
            let out = f(x.clone());
            let w = random(out.dims(), 98);
            let grads = (out.clone() * w).sum().backward();
            let mut parts = vec![
                out.inner().into_data(),
                x.grad(&grads).expect("x is tracked").into_data(),
                conv.weight.val().grad(&grads).expect("tracked").into_data(),
            ];
            if let Some(bias) = &conv.bias {
                parts.push(bias.val().grad(&grads).expect("tracked").into_data());
            }
            parts
        };
        let ours = parts(&|x| sd_conv2d(&conv, x));
        let burn = parts(&|x| conv.forward(x));
        assert_eq!(ours.len(), burn.len());
        for (part, (a, b)) in [
            "output",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ]
        .iter()
        .zip(ours.iter().zip(&burn))
        {
            let case = format!("{part}, stride {:?}", conv.stride);
            if conv.stride == [1, 1] {
                // Sums in another order than Burn's im2col: the weight gradient sums 128 pixels'
                // products of values below 2 (f32 ulps of 6e-8 each, growing with the square
                // root of the count), the others 9 to 36 products.
                let d = relative_difference(a, b);
                assert!(d < 1e-5, "{case}: {d}");
            } else {
                assert_eq!(a, b, "{case}");
            }
        }
    }
}

/// `f` on tokens `[B, N, D]` given and returning them as `[B, N, 1, D]`.
fn as_tokens(x: Tensor<AB, 4>, f: impl Fn(Tensor<AB, 3>) -> Tensor<AB, 3>) -> Tensor<AB, 4> {
    let [b, n, _, d] = x.dims();
    let out = f(x.reshape([b, n, d]));
    let d_out = out.dims()[2];
    out.reshape([b, n, 1, d_out])
}

#[test]
fn frozen_linear_matches_burn_bit_for_bit() {
    let _rng = crate::burn_rng();
    let device = Default::default();
    // Tokens `[B, N, D]` as `x: [B, N, 1, D]`; with and without bias.
    let linears = [
        LinearConfig::new(24, 40).init::<AB>(&device),
        LinearConfig::new(24, 40)
            .with_bias(false)
            .init::<AB>(&device),
    ];
    let x = random([2, 70, 1, 24], 7);
    for linear in linears {
        let frozen = linear.clone().no_grad();
        let ours = run(|x| as_tokens(x, |t| sd_linear(&frozen, t)), &x);
        let burn = run(|x| as_tokens(x, |t| frozen.forward(t)), &x);
        assert_eq!(ours.0, burn.0, "forward");
        assert_eq!(ours.1, burn.1, "input gradient");
        // A tracked weight takes Burn's path: the same weight gradient.
        let weight_grad = |f: &dyn Fn(Tensor<AB, 3>) -> Tensor<AB, 3>| {
            let grads = f(x.clone().reshape([2, 70, 24])).sum().backward();
            linear
                .weight
                .val()
                .grad(&grads)
                .expect("the weight is tracked")
                .into_data()
        };
        assert_eq!(
            weight_grad(&|x| sd_linear(&linear, x)),
            weight_grad(&|x| linear.forward(x))
        );
    }
}

#[test]
fn frozen_norms_match_burn() {
    let _rng = crate::burn_rng();
    use burn::nn::{GroupNormConfig, LayerNormConfig};
    use diffris_model::norm::{group_norm, layer_norm, sd_group_norm, sd_layer_norm};
    let device = Default::default();
    // Random affine parameters (Burn initialises gamma 1, beta 0), from this file's generator.
    let params = |n: usize, seed: u64| random([1, 1, 1, n], seed).reshape([n]).require_grad();
    let mut gn = GroupNormConfig::new(4, 8).init::<AB>(&device);
    gn.gamma = gn.gamma.map(|p| p.map(|_| params(8, 21)));
    gn.beta = gn.beta.map(|p| p.map(|_| params(8, 22)));
    let mut ln = LayerNormConfig::new(12)
        .with_epsilon(1e-5)
        .init::<AB>(&device);
    ln.gamma = ln.gamma.map(|_| params(12, 23));
    ln.beta = ln.beta.map(|p| p.map(|_| params(12, 24)));
    // Group norm of [2, 8, 5, 6]; layer norm of 2 x 30 tokens of 12 channels.
    let x = random([2, 8, 5, 6], 25);
    let tokens = random([2, 30, 1, 12], 26);
    let cases = [
        (
            "group norm",
            run(|x| sd_group_norm(&gn.clone().no_grad(), x), &x),
            run(|x| group_norm(&gn.clone().no_grad(), x), &x),
        ),
        (
            "layer norm",
            run(
                |x| as_tokens(x, |t| sd_layer_norm(&ln.clone().no_grad(), 1e-5, t)),
                &tokens,
            ),
            run(
                |x| as_tokens(x, |t| layer_norm(&ln.clone().no_grad(), t)),
                &tokens,
            ),
        ),
    ];
    for (name, ours, burn) in cases {
        // The kernel sums the statistics in f64 and the gradient in one formula (Burn: f32 sums,
        // a chain of ops): outputs of magnitude ~5 and gradients agree to a few f32 ulps.
        let forward = relative_difference(&ours.0, &burn.0);
        let input = relative_difference(&ours.1, &burn.1);
        assert!(forward < 1e-5, "{name} forward: {forward}");
        assert!(input < 1e-5, "{name} input gradient: {input}");
    }
    // Tracked parameters take Burn's composition: the same parameter gradients, bit for bit.
    let grads = sd_group_norm(&gn, x.clone()).sum().backward();
    let ours = gn.gamma.as_ref().unwrap().val().grad(&grads).unwrap();
    let grads = group_norm(&gn, x.clone()).sum().backward();
    let burn = gn.gamma.as_ref().unwrap().val().grad(&grads).unwrap();
    assert_eq!(ours.into_data(), burn.into_data());
    let t3 = tokens.clone().reshape([2, 30, 12]);
    let grads = sd_layer_norm(&ln, 1e-5, t3.clone()).sum().backward();
    let ours = ln.gamma.val().grad(&grads).unwrap();
    let grads = ln.forward(t3).sum().backward();
    let burn = ln.gamma.val().grad(&grads).unwrap();
    assert_eq!(ours.into_data(), burn.into_data());
}

// Burn's own `swap_dims` and `permute` are the references here (clippy refuses them in model
// code: see `SdBackend::sd_swap_dims`).
#[allow(clippy::disallowed_methods)]
#[test]
fn transpose_matches_swap_dims_bit_for_bit() {
    let _rng = crate::burn_rng();
    // [B, M, N] = [2, 37, 45]: sides not multiples of the kernel's tile.
    let x = random([2, 37, 45, 1], 31);
    fn swap(x: Tensor<AB, 4>, f: impl Fn(Tensor<AB, 3>) -> Tensor<AB, 3>) -> Tensor<AB, 4> {
        let [b, m, n, _] = x.dims();
        f(x.reshape([b, m, n])).reshape([b, n, m, 1])
    }
    let ours = run(|x| swap(x, sd_transpose), &x);
    let burn = run(|x| swap(x, |t| t.swap_dims(1, 2)), &x);
    assert_eq!(ours.0, burn.0, "forward");
    assert_eq!(ours.1, burn.1, "input gradient");
    // A swapped view as input (flex swaps it back without a copy).
    let t = x.clone().reshape([2, 37, 45]);
    assert_eq!(
        sd_transpose(t.clone().swap_dims(1, 2)).into_data(),
        t.into_data()
    );
}

/// The axis helpers model code calls give Burn's `swap_dims`, `transpose` and `permute`, outputs
/// and input gradients, bit for bit (flex keeps Burn's operations; the helpers only route them
/// through `SdBackend`, whose libtorch implementation mends burn-tch's aliasing).
#[allow(clippy::disallowed_methods)]
#[test]
fn axis_helpers_match_burn_bit_for_bit() {
    let _rng = crate::burn_rng();
    use diffris_kernels::{permute, swap_dims, transpose};
    let x = random([2, 3, 4, 5], 32);
    // Each case ends in a reshape to a fixed shape so the same `run` compares them.
    type Case = fn(Tensor<AB, 4>) -> Tensor<AB, 4>;
    let cases: [(&str, Case, Case); 3] = [
        (
            "swap_dims",
            |t| swap_dims(t, 0, 2).reshape([2, 3, 4, 5]),
            |t| t.swap_dims(0, 2).reshape([2, 3, 4, 5]),
        ),
        (
            "transpose",
            |t| transpose(t).reshape([2, 3, 4, 5]),
            |t| t.transpose().reshape([2, 3, 4, 5]),
        ),
        (
            "permute",
            |t| permute(t, [3, 0, 2, 1]).reshape([2, 3, 4, 5]),
            |t| t.permute([3, 0, 2, 1]).reshape([2, 3, 4, 5]),
        ),
    ];
    for (name, ours, burn) in cases {
        let (ours, burn) = (run(ours, &x), run(burn, &x));
        assert_eq!(ours.0, burn.0, "{name}: forward");
        assert_eq!(ours.1, burn.1, "{name}: input gradient");
    }
}
