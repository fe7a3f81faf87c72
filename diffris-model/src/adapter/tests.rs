use super::*;
use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::Distribution;

type B = Flex;
type AB = Autodiff<Flex>;

fn text<Bk: Backend>(device: &Bk::Device) -> Tensor<Bk, 3> {
    Tensor::random([2, 77, 32], Distribution::Normal(0.0, 1.0), device)
}

fn small(cfg: CpAdapterConfig) -> CpAdapterConfig {
    CpAdapterConfig {
        heads: 4,
        ffn_dim: 64,
        ..cfg
    }
}

/// Table 4's four rows.
fn rows() -> [CpAdapterConfig; 4] {
    let full = small(CpAdapterConfig::default());
    [
        CpAdapterConfig {
            enabled: false,
            ..full.clone()
        },
        CpAdapterConfig {
            object_reasoning: false,
            domain_adjustment: false,
            ..full.clone()
        },
        CpAdapterConfig {
            domain_adjustment: false,
            ..full.clone()
        },
        full,
    ]
}

#[test]
fn low_rank_branch_contributes_exactly_zero_at_init() {
    let device = Default::default();
    let with = small(CpAdapterConfig::default()).init::<B>(32, &device);
    let l = text::<B>(&device);
    let out_with: Vec<f32> = with.adjusted(l.clone()).into_data().to_vec().unwrap();
    let without = CpAdapter {
        low_rank: None,
        ..with
    };
    let out_without: Vec<f32> = without.adjusted(l).into_data().to_vec().unwrap();
    assert_eq!(
        out_with, out_without,
        "B(A(x)) must be exactly 0 with B = 0"
    );
}

#[test]
fn adapter_off_is_the_identity() {
    let device = Default::default();
    let adapter = rows()[0].init::<B>(32, &device);
    assert_eq!(adapter.num_params(), 0);
    let l = text::<B>(&device);
    let out = adapter.forward(l.clone());
    assert_eq!(
        out.into_data().to_vec::<f32>().unwrap(),
        l.into_data().to_vec::<f32>().unwrap()
    );
}

#[test]
fn gated_fusion_scales_the_adjusted_states_by_gamma() {
    // Row 2 (encoder only): L' - L = gamma * E with gamma = 1e-4 everywhere at init.
    let device = Default::default();
    let adapter = rows()[1].init::<B>(32, &device);
    let l = text::<B>(&device);
    let fused = adapter.forward(l.clone()) - l.clone();
    let expected = adapter.adjusted(l).mul_scalar(1e-4);
    let diff: f32 = (fused - expected).abs().max().into_scalar();
    // (L + x) - L recovers x up to the rounding of L + x: half an ulp of |L| <= ~5 is 2.4e-7.
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn every_table4_row_builds_and_backpropagates() {
    let device = Default::default();
    for (i, cfg) in rows().into_iter().enumerate() {
        let adapter = cfg.init::<AB>(32, &device);
        let l = text::<AB>(&device).require_grad();
        let loss = adapter.forward(l.clone()).powf_scalar(2.0).sum();
        let grads = loss.backward();
        let dl: f32 = l
            .grad(&grads)
            .expect("gradient reaches the input")
            .abs()
            .sum()
            .into_scalar();
        assert!(dl > 0.0, "row {}", i + 1);
        let params = GradientsParams::from_grads(grads, &adapter);
        match &adapter.gamma {
            None => assert_eq!(params.len(), 0, "row 1 trains nothing"),
            Some(gamma) => {
                let g = params
                    .get::<B, 1>(gamma.id)
                    .expect("gamma receives a gradient");
                assert!(g.abs().sum().into_scalar() > 0.0, "row {}", i + 1);
            }
        }
        if let Some(lr) = &adapter.low_rank {
            let g = params
                .get::<B, 2>(lr.up.weight.id)
                .expect("the zero up-projection still learns");
            assert!(g.abs().sum().into_scalar() > 0.0);
        }
    }
}

/// A `[rows, cols]` parameter from row-major values.
fn param<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(
        burn::tensor::TensorData::new(values, shape),
        &Default::default(),
    ))
}

#[test]
fn vpd_kind_is_a_gated_gelu_mlp_by_hand() {
    // d = 2. fc1 = identity without bias, fc2 = [[1, 1], [0, 2]] (burn stores [in, out]) with
    // bias [0.5, 0], gamma = [2, 3], L = [1, -1].
    // gelu(1) = Phi(1) = 0.8413447461, gelu(-1) = -(1 - Phi(1)) = -0.1586552539.
    // F_d = [0.8413447461 + 0.5, 0.8413447461 - 2 * 0.1586552539] = [1.3413447461, 0.5240342383]
    // L'  = [1 + 2 * 1.3413447461, -1 + 3 * 0.5240342383] = [3.6826894922, 0.5721027149].
    let cfg = CpAdapterConfig {
        kind: AdapterKind::Vpd,
        ..CpAdapterConfig::default()
    };
    cfg.validate(2).unwrap();
    let mut adapter = cfg.init::<B>(2, &Default::default());
    assert!(adapter.encoder.is_none() && adapter.reasoning.is_none());
    assert!(adapter.low_rank.is_none());
    // Two D x D layers with bias, and gamma.
    assert_eq!(adapter.num_params(), 2 * (2 * 2 + 2) + 2);
    let gamma: Vec<f32> = adapter
        .gamma
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(gamma, vec![1e-4f32; 2]);
    let mlp = adapter.vpd.as_mut().unwrap();
    mlp.fc1.weight = param(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
    mlp.fc1.bias = Some(param(vec![0.0, 0.0], [2]));
    mlp.fc2.weight = param(vec![1.0, 1.0, 0.0, 2.0], [2, 2]);
    mlp.fc2.bias = Some(param(vec![0.5, 0.0], [2]));
    adapter.gamma = Some(param(vec![2.0, 3.0], [2]));
    let l = Tensor::<B, 3>::from_data(
        burn::tensor::TensorData::new(vec![1.0f32, -1.0], [1, 1, 2]),
        &Default::default(),
    );
    let out: Vec<f32> = adapter.forward(l).into_data().to_vec().unwrap();
    // By hand: GELU(1) = 0.8413447, GELU(-1) = -0.1586553; fc2 gives (1.3413447, 0.5240342),
    // so L + gamma F = (1 + 2 x 1.3413447, -1 + 3 x 0.5240342). f32 arithmetic on values near 1:
    // a few ulps.
    for (o, e) in out.iter().zip([3.682_689_4_f32, 0.572_102_7]) {
        assert!((o - e).abs() < 1e-5, "{out:?}");
    }
}

#[test]
fn the_adapter_kind_is_written_only_when_it_is_vpd() {
    let cp = serde_json::to_string(&CpAdapterConfig::default()).unwrap();
    assert!(!cp.contains("kind"), "{cp}");
    let vpd = CpAdapterConfig {
        kind: AdapterKind::Vpd,
        ..CpAdapterConfig::default()
    };
    let text = serde_json::to_string(&vpd).unwrap();
    assert!(text.contains(r#""kind":"vpd""#), "{text}");
    assert_eq!(serde_json::from_str::<CpAdapterConfig>(&text).unwrap(), vpd);
}

/// Component 2 by hand with identity projections, a zero MLP and no low-rank branch, so that
/// `F_d = L + softmax(Q K^T / sqrt(d)) V` with the encoder's output `E` (taken from the
/// encoder itself) in the roles each reading gives it: `Q = L, K = V = E` by default,
/// `Q = E, K = V = L` under `reasoning_query: encoded`.
#[test]
fn reasoning_roles_by_hand() {
    let device = Default::default();
    let d = 2;
    let t = 3;
    let l_values = vec![1.0f32, -0.5, 0.25, 2.0, -1.5, 0.75];
    let l = Tensor::<B, 3>::from_data(
        burn::tensor::TensorData::new(l_values.clone(), [1, t, d]),
        &device,
    );
    // softmax(q k^T / sqrt(d)) v for row-major [t, d] matrices.
    let attend = |q: &[f32], kv: &[f32]| -> Vec<f32> {
        let mut out = vec![0.0f32; t * d];
        for i in 0..t {
            let scores: Vec<f32> = (0..t)
                .map(|j| {
                    (0..d).map(|c| q[i * d + c] * kv[j * d + c]).sum::<f32>() / (d as f32).sqrt()
                })
                .collect();
            let top = scores.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
            let z: f32 = e.iter().sum();
            for j in 0..t {
                for c in 0..d {
                    out[i * d + c] += e[j] / z * kv[j * d + c];
                }
            }
        }
        out
    };
    for role in [ReasoningQuery::Original, ReasoningQuery::Encoded] {
        let cfg = CpAdapterConfig {
            heads: 1,
            ffn_dim: 4,
            layers: 1,
            dropout: 0.0,
            domain_adjustment: false,
            reasoning_query: role,
            ..CpAdapterConfig::default()
        };
        cfg.validate(d).unwrap();
        let mut adapter = cfg.init::<B>(d, &device);
        let identity = || param(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
        let zero = |shape: [usize; 2]| param(vec![0.0; shape[0] * shape[1]], shape);
        let r = adapter.reasoning.as_mut().unwrap();
        for lin in [
            &mut r.attention.query,
            &mut r.attention.key,
            &mut r.attention.value,
            &mut r.attention.output,
        ] {
            lin.weight = identity();
            lin.bias = Some(param(vec![0.0; 2], [2]));
        }
        r.mlp.fc2.weight = zero([2, 2]);
        r.mlp.fc2.bias = Some(param(vec![0.0; 2], [2]));
        let e: Vec<f32> = adapter
            .encoder
            .as_ref()
            .unwrap()
            .forward(TransformerEncoderInput::new(l.clone()))
            .into_data()
            .to_vec()
            .unwrap();
        let attn = match role {
            ReasoningQuery::Original => attend(&l_values, &e),
            ReasoningQuery::Encoded => attend(&e, &l_values),
        };
        let expected: Vec<f32> = l_values.iter().zip(&attn).map(|(a, b)| a + b).collect();
        let got: Vec<f32> = adapter.adjusted(l.clone()).into_data().to_vec().unwrap();
        // f32 sums of three terms of size ~2: a few ulps.
        for (g, x) in got.iter().zip(&expected) {
            assert!((g - x).abs() < 1e-5, "{role:?}: {got:?} vs {expected:?}");
        }
    }
}
