//! The memory-efficient attention (`diffris_kernels`): its output equals Burn's attention, its
//! gradients equal Burn's autodiff gradients and central finite differences (in f64), the query
//! blocks do not change the result, and only tracked inputs get a gradient.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution, Tensor};
use diffris_kernels::attention::{self as blocked, Wanted};
use diffris_kernels::sd_attention;

type AB = Autodiff<Flex>;

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Flex, D> {
    use burn::tensor::backend::Backend;
    let device = Default::default();
    Flex::seed(&device, seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
}

fn max_abs<const D: usize>(t: Tensor<Flex, D>) -> f64 {
    t.abs().max().into_scalar() as f64
}

/// `max|a - b| / max(1e-12, max|b|)`.
fn rel<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f64 {
    max_abs(a - b.clone()) / max_abs(b).max(1e-12)
}

/// Self-attention-like and cross-attention-like shapes: `([B, H, Nq, D], Nk)`.
const SHAPES: [([usize; 4], usize); 2] = [([2, 3, 37, 8], 37), ([1, 2, 45, 16], 7)];

fn inputs(shape: [usize; 4], nk: usize, seed: u64) -> [Tensor<Flex, 4>; 3] {
    let [b, h, _, d] = shape;
    [
        random(shape, seed),
        random([b, h, nk, d], seed + 1),
        random([b, h, nk, d], seed + 2),
    ]
}

fn burn_attention<B: burn::tensor::backend::Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

#[test]
fn forward_equals_burn_attention() {
    let _rng = crate::burn_rng();
    for (i, (shape, nk)) in SHAPES.into_iter().enumerate() {
        let [q, k, v] = inputs(shape, nk, 10 * i as u64);
        let reference = burn_attention(q.clone(), k.clone(), v.clone());
        // Tracked inputs: the blocked forward with saved statistics.
        let tracked = sd_attention(
            Tensor::<AB, 4>::from_inner(q.clone()).require_grad(),
            Tensor::<AB, 4>::from_inner(k.clone()).require_grad(),
            Tensor::<AB, 4>::from_inner(v.clone()),
        )
        .inner();
        // fp32 rounding of a softmax over <= 37 terms and a 37-term dot product: ~1e-7.
        assert!(rel(tracked, reference.clone()) < 1e-5);
        // Untracked and plain-backend paths.
        let untracked = sd_attention(
            Tensor::<AB, 4>::from_inner(q.clone()),
            Tensor::<AB, 4>::from_inner(k.clone()),
            Tensor::<AB, 4>::from_inner(v.clone()),
        )
        .inner();
        assert!(rel(untracked, reference.clone()) < 1e-5);
        assert!(rel(sd_attention(q, k, v), reference) < 1e-5);
    }
}

#[test]
fn query_blocks_do_not_change_the_result() {
    let _rng = crate::burn_rng();
    let [q, k, v] = inputs([2, 2, 23, 8], 23, 3);
    let g = random([2, 2, 23, 8], 9);
    let all = Wanted {
        q: true,
        k: true,
        v: true,
    };
    let (out_whole, stats_whole) = blocked::forward(q.clone(), k.clone(), v.clone(), 23);
    let grads_whole = blocked::backward(
        [q.clone(), k.clone(), v.clone()],
        out_whole.clone(),
        stats_whole,
        g.clone(),
        all,
    );
    // 5 rows per block: four full blocks and one of 3.
    let (out, stats) = blocked::forward(q.clone(), k.clone(), v.clone(), 5);
    assert_eq!(stats.blocks.len(), 5);
    let grads = blocked::backward([q, k, v], out.clone(), stats, g, all);
    assert!(rel(out, out_whole) < 1e-6);
    for (a, b) in [
        (grads.q, grads_whole.q),
        (grads.k, grads_whole.k),
        (grads.v, grads_whole.v),
    ] {
        // dk and dv sum five block contributions instead of one product: ~1e-7 apart.
        assert!(rel(a.unwrap(), b.unwrap()) < 1e-6);
    }
}

/// Gradients of `sum(attention(q, k, v) * w)` with respect to the tracked inputs, computed by
/// `f` on the autodiff backend.
fn gradients(
    f: fn(Tensor<AB, 4>, Tensor<AB, 4>, Tensor<AB, 4>) -> Tensor<AB, 4>,
    [q, k, v]: [Tensor<Flex, 4>; 3],
    w: Tensor<Flex, 4>,
    track: [bool; 3],
) -> [Option<Tensor<Flex, 4>>; 3] {
    let lift = |t: Tensor<Flex, 4>, tracked: bool| {
        let t = Tensor::<AB, 4>::from_inner(t);
        if tracked { t.require_grad() } else { t }
    };
    let (q, k, v) = (lift(q, track[0]), lift(k, track[1]), lift(v, track[2]));
    let grads = (f(q.clone(), k.clone(), v.clone()) * Tensor::from_inner(w))
        .sum()
        .backward();
    [q.grad(&grads), k.grad(&grads), v.grad(&grads)]
}

/// Each input has a gradient exactly when tracked, within `bound` (relative to the reference's
/// largest magnitude) of the reference's.
fn assert_gradients_close(
    ours: [Option<Tensor<Flex, 4>>; 3],
    reference: [Option<Tensor<Flex, 4>>; 3],
    track: [bool; 3],
    bound: f64,
    shape: [usize; 4],
) {
    for (n, (a, b)) in ours.into_iter().zip(reference).enumerate() {
        assert_eq!(
            a.is_some(),
            track[n],
            "input {n} gets a gradient iff tracked"
        );
        if let (Some(a), Some(b)) = (a, b) {
            let r = rel(a, b);
            assert!(r < bound, "shape {shape:?}, input {n}: relative error {r}");
        }
    }
}

#[test]
fn gradients_equal_burn_autodiff() {
    let _rng = crate::burn_rng();
    for (i, (shape, nk)) in SHAPES.into_iter().enumerate() {
        let x = inputs(shape, nk, 100 + 10 * i as u64);
        let w = random(shape, 7);
        for track in [[true; 3], [false, true, true], [true, false, false]] {
            let ours = gradients(sd_attention, x.clone(), w.clone(), track);
            let reference = gradients(burn_attention, x.clone(), w.clone(), track);
            // Same math, different order of fp32 operations: the 1e-4.
            assert_gradients_close(ours, reference, track, 1e-4, shape);
        }
    }
}

/// The value of a one-element f64 tensor, without a round trip through f32.
fn scalar_f64(t: Tensor<Flex, 1>) -> f64 {
    t.into_data().to_vec::<f64>().expect("an f64 tensor")[0]
}

#[test]
fn gradients_equal_central_finite_differences_in_f64() {
    let _rng = crate::burn_rng();
    let f64_of = |t: Tensor<Flex, 4>| t.cast(DType::F64);
    let (shape, nk) = SHAPES[1];
    let x = inputs(shape, nk, 42).map(f64_of);
    let w = f64_of(random(shape, 43));
    let analytic = gradients(sd_attention, x.clone(), w.clone(), [true; 3]);
    let objective = |x: &[Tensor<Flex, 4>; 3]| -> f64 {
        let out = sd_attention(x[0].clone(), x[1].clone(), x[2].clone());
        scalar_f64((out * w.clone()).sum())
    };
    let eps = 1e-5;
    for input in 0..3 {
        let grad = analytic[input].clone().expect("tracked");
        assert_eq!(grad.dtype(), DType::F64, "the op keeps the dtype");
        // One random direction per input: (L(x + eps u) - L(x - eps u)) / 2 eps = <grad, u>.
        let u = f64_of(random(x[input].dims(), 50 + input as u64));
        let shifted = |sign: f64| {
            let mut y = x.clone();
            y[input] = y[input].clone() + u.clone().mul_scalar(sign * eps);
            objective(&y)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
        let exact = scalar_f64((grad * u).sum());
        // f64: truncation ~eps^2 and rounding ~1e-16 / eps, both far below 1e-8.
        assert!(
            (numeric - exact).abs() <= 1e-8 * exact.abs().max(1.0),
            "input {input}: finite difference {numeric} vs analytic {exact}"
        );
    }
}

#[test]
fn block_rows_bound_the_block_temporaries() {
    let _rng = crate::burn_rng();
    // SD-1.5's 64x64 level: batch 1, 8 heads, 4096 keys -> 512 rows of 4096 (64 MiB in f32).
    assert_eq!(blocked::block_rows(1, 8, 4096), 512);
    assert_eq!(blocked::block_rows(4, 8, 4096), 128);
    // Huge key counts still get one row.
    assert_eq!(blocked::block_rows(64, 64, 1 << 20), 1);
}

/// The CPU kernel flex runs (`ops::cpu`, parallel tasks, SIMD softmax rows) against the
/// backend-generic blocked version it replaces on flex, for shapes that span several of the
/// kernel's 64-row blocks and 1024-row backward chunks, and for every tracking pattern.
#[test]
fn flex_kernel_equals_the_generic_blocks() {
    let _rng = crate::burn_rng();
    use diffris_kernels::AttentionOps;
    // [B, H, Nq, D], Nk, Dv: self-attention over two chunks, and cross-attention-like.
    for (i, (shape, nk, dv)) in [([1, 2, 1100, 8], 1100, 8), ([2, 1, 130, 16], 7, 12)]
        .into_iter()
        .enumerate()
    {
        let [b, h, nq, _] = shape;
        let [q, k, _] = inputs(shape, nk, 200 + i as u64);
        let v = random([b, h, nk, dv], 300 + i as u64);
        let g = random([b, h, nq, dv], 400 + i as u64);
        let (out, stats) = Flex::sd_attention_forward(q.clone(), k.clone(), v.clone());
        let (out_ref, stats_ref) = blocked::forward_blocked(q.clone(), k.clone(), v.clone());
        // Same operations, a different exp (<= 2.5e-7 relative, `ops::cpu::rows`) and summation
        // order over <= 1100 terms: ~1e-6.
        assert!(rel(out.clone(), out_ref.clone()) < 1e-5);
        assert_eq!(
            stats.blocks.len(),
            1,
            "one [B, H, Nq, 1] pair of statistics"
        );
        // Head-split views (`[B, N, H, D]` data with the middle axes swapped, what the UNet
        // passes) are read row by row: the same bits as contiguous inputs.
        let head_split = |t: &Tensor<Flex, 4>| {
            let bnhd = diffris_kernels::swap_dims(t.clone(), 1, 2);
            diffris_kernels::swap_dims(
                Tensor::<Flex, 4>::from_data(bnhd.to_data(), &bnhd.device()),
                1,
                2,
            )
        };
        let (out_split, _) =
            Flex::sd_attention_forward(head_split(&q), head_split(&k), head_split(&v));
        assert_eq!(out_split.to_data(), out.to_data());
        let max_ref = Tensor::cat(stats_ref.blocks.iter().map(|s| s.0.clone()).collect(), 2);
        let sum_ref = Tensor::cat(stats_ref.blocks.iter().map(|s| s.1.clone()).collect(), 2);
        assert!(rel(stats.blocks[0].0.clone(), max_ref) < 1e-6);
        assert!(rel(stats.blocks[0].1.clone(), sum_ref) < 1e-5);
        for track in [
            [true; 3],
            [false, true, true],
            [true, false, false],
            [false, false, true],
        ] {
            let wanted = Wanted {
                q: track[0],
                k: track[1],
                v: track[2],
            };
            let x = [q.clone(), k.clone(), v.clone()];
            let ours = Flex::sd_attention_backward(
                x.clone(),
                out.clone(),
                stats.clone(),
                g.clone(),
                wanted,
            );
            let reference =
                blocked::backward(x, out_ref.clone(), stats_ref.clone(), g.clone(), wanted);
            // dk and dv sum 1100 rows in another grouping: ~1e-6 of the scale.
            assert_gradients_close(
                [ours.q, ours.k, ours.v],
                [reference.q, reference.k, reference.v],
                track,
                1e-5,
                shape,
            );
        }
    }
}

/// The kernel's results do not depend on the number of threads (each element has one task and
/// the chunks' dk/dv are summed in chunk order).
#[test]
fn flex_kernel_is_the_same_on_any_thread_count() {
    let _rng = crate::burn_rng();
    use diffris_kernels::flex::attention::{self as kernel, Dims};
    let dims = Dims {
        bh: 3,
        nq: 2100,
        nk: 300,
        d: 8,
        dv: 8,
    };
    let data = |n: usize, seed: u64| -> Vec<f32> {
        random([n], seed).into_data().to_vec::<f32>().expect("f32")
    };
    let (q, k, v) = (
        data(dims.bh * dims.nq * dims.d, 1),
        data(dims.bh * dims.nk * dims.d, 2),
        data(dims.bh * dims.nk * dims.dv, 3),
    );
    let g = data(dims.bh * dims.nq * dims.dv, 4);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| {
            let f = kernel::forward(&q, &k, &v, dims);
            let all = Wanted {
                q: true,
                k: true,
                v: true,
            };
            let saved = kernel::Saved {
                q: &q,
                k: &k,
                v: &v,
                out: &f.out,
                max: &f.max,
                sum: &f.sum,
                grad_out: &g,
            };
            let b = kernel::backward(saved, dims, all);
            (f.out, b.q, b.k, b.v)
        })
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, run(8));
}
