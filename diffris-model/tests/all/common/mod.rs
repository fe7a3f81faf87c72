#![allow(dead_code)] // each test crate uses its own part of the fixtures.

//! The seeded tiny SD fixtures (`tests/fixtures/sd_tiny`, made by `tools/make_sd_fixtures.py`)
//! and their reference tensors, shared by the parity tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use diffris_model::sd::{SdConfig, StableDiffusion};
use safetensors::SafeTensors;

type B = Flex;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny")
}

/// The SD architecture of the fixture's diffusers folder (what its `config.json` files say).
pub fn diffusers_arch() -> SdConfig {
    let sd: StableDiffusion<B> =
        StableDiffusion::from_diffusers(&fixtures().join("diffusers"), &Default::default())
            .unwrap();
    sd.config()
}

/// Shape, float data (F32 tensors) and integer data (I64 tensors) of a reference tensor.
pub type Entry = (Vec<usize>, Vec<f32>, Vec<i64>);

pub struct Reference {
    pub tensors: HashMap<String, Entry>,
}

impl Reference {
    pub fn load() -> Self {
        Self::load_file("reference.safetensors")
    }

    /// The reference tensors of another file of the fixture folder.
    pub fn load_file(name: &str) -> Self {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let (f, i) = match view.dtype() {
                safetensors::Dtype::F32 => (
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    vec![],
                ),
                safetensors::Dtype::I64 => (
                    vec![],
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                other => panic!("unexpected dtype {other:?} for {name}"),
            };
            tensors.insert(name, (shape, f, i));
        }
        Self { tensors }
    }

    pub fn float<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let (shape, data, _) = &self.tensors[name];
        Tensor::from_data(
            TensorData::new(data.clone(), shape.clone()),
            &Default::default(),
        )
    }

    pub fn ids(&self, name: &str) -> Tensor<B, 2, Int> {
        let (shape, _, data) = &self.tensors[name];
        Tensor::from_data(
            TensorData::new(data.clone(), shape.clone()),
            &Default::default(),
        )
    }

    pub fn names(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// `max|got - want| <= 1e-4 * max(1, max|want|)`: fp32 reimplementations of one graph differ by
/// reduction order only (~2e-6 between fp32 and fp64 in the reference runs, up to 2.4e-5
/// between diffusers and the original LDM code); a wrong op shows at 1e-2 and above.
pub fn assert_close<const D: usize>(name: &str, got: Tensor<B, D>, want: Tensor<B, D>) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let scale = want.clone().abs().max().into_scalar().max(1.0);
    let diff: f32 = (got - want).abs().max().into_scalar();
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |diff| = {diff:e} > 1e-4 * {scale}"
    );
}
