//! Strict application of checkpoint tensors to a module: every parameter must find its key with
//! a compatible shape; the caller then checks that every checkpoint key was used.
//!
//! Parameter shapes are read lazily (no allocation), so a full-size model can be checked or
//! loaded without first materialising random weights.

use std::collections::BTreeSet;
use std::path::Path;
use std::rc::Rc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{DType, Shape, Tensor, TensorData, backend::Backend};
use burn_store::{ModuleSnapshot, TensorSnapshot, TensorSnapshotError};

use crate::error::{ModelError, Result};

/// A parameter of a module: its path (enum variants skipped, as checkpoints name them), its
/// shape, and whether it belongs to a `Linear` (whose weight Burn stores transposed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    pub path: String,
    pub shape: Vec<usize>,
    pub in_linear: bool,
}

#[derive(Default)]
struct ShapeVisitor {
    path: Vec<String>,
    containers: Vec<String>,
    params: Vec<ParamInfo>,
}

impl ShapeVisitor {
    fn record(&mut self, shape: Shape) {
        let in_linear = self.containers.last().is_some_and(|c| c == "Struct:Linear");
        self.params.push(ParamInfo {
            path: self.path.join("."),
            shape: shape.to_vec(),
            in_linear,
        });
    }
}

impl<B: Backend> ModuleVisitor<B> for ShapeVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.record(param.lazy_shape());
    }
}

/// Every float parameter of `module`, without initialising it.
pub fn param_infos<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    let mut v = ShapeVisitor::default();
    module.visit(&mut v);
    v.params
}

/// The checkpoint layout a parameter expects: `[out, in]` for a Linear weight Burn keeps as
/// `[in, out]`, the parameter's own shape otherwise.
pub fn checkpoint_shape(p: &ParamInfo) -> Vec<usize> {
    if p.in_linear && p.shape.len() == 2 {
        vec![p.shape[1], p.shape[0]]
    } else {
        p.shape.clone()
    }
}

/// Whether a checkpoint tensor of shape `found` can fill `p`: equal to the expected layout once
/// trailing unit dimensions are ignored (a 1x1 conv weight `[o, i, 1, 1]` fills a Linear
/// `[o, i]`, as LDM's VAE attention and SD-2's projections need).
pub fn compatible(p: &ParamInfo, found: &[usize]) -> bool {
    fn trim(s: &[usize]) -> &[usize] {
        let mut end = s.len();
        while end > 1 && s[end - 1] == 1 {
            end -= 1;
        }
        &s[..end]
    }
    trim(&checkpoint_shape(p)) == trim(found)
}

/// Applies `sources[i]` to `params[i]` (converted to f32, transposed for Linear weights,
/// reshaped to the parameter shape). Shapes must have been checked with [`compatible`].
pub fn apply<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    params: &[ParamInfo],
    sources: &[&TensorSnapshot],
    file: &Path,
) -> Result<()> {
    // A weight must be stored as floats: an integer tensor would be cast without a word.
    for s in sources {
        if !matches!(s.dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
            return Err(ModelError::checkpoint(
                file,
                format!(
                    "key `{}` holds {:?} values; a weight must be F16, BF16, F32 or F64",
                    s.full_path(),
                    s.dtype
                ),
            ));
        }
    }
    let snapshots: Vec<TensorSnapshot> = params
        .iter()
        .zip(sources)
        .map(|(p, s)| {
            let data_fn = s.clone_data_fn();
            let transpose = p.in_linear && p.shape.len() == 2;
            let target = p.shape.clone();
            let key = s.full_path();
            let closure = move || {
                let data = data_fn()?.convert::<f32>();
                let values: Vec<f32> = data.to_vec().expect("converted to f32");
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    let count = values.iter().filter(|v| !v.is_finite()).count();
                    return Err(TensorSnapshotError::DataError(format!(
                        "key `{key}` holds {count} non-finite value(s), the first {} at index {i}",
                        values[i]
                    )));
                }
                let values = if transpose {
                    // Checkpoint layout [out, in] (row-major) -> Burn's [in, out].
                    let (d_in, d_out) = (target[0], target[1]);
                    let mut t = vec![0f32; values.len()];
                    for o in 0..d_out {
                        for i in 0..d_in {
                            t[i * d_out + o] = values[o * d_in + i];
                        }
                    }
                    t
                } else {
                    values
                };
                Ok(TensorData::new(values, target.clone()))
            };
            TensorSnapshot::from_closure(
                Rc::new(closure),
                DType::F32,
                Shape::from(p.shape.clone()),
                p.path.split('.').map(String::from).collect(),
                vec![],
                ParamId::new(),
            )
        })
        .collect();
    let result = module.apply(snapshots, None, None, true);
    if let Some(err) = result.errors.first() {
        return Err(ModelError::checkpoint(
            file,
            format!("applying tensors: {err}"),
        ));
    }
    let applied: BTreeSet<&String> = result.applied.iter().collect();
    let not_applied: Vec<String> = params
        .iter()
        .filter(|p| !applied.contains(&p.path))
        .map(|p| p.path.clone())
        .collect();
    if !not_applied.is_empty() {
        return Err(ModelError::MissingKeys {
            path: file.to_path_buf(),
            keys: not_applied,
        });
    }
    Ok(())
}

/// Resolves each parameter to the first candidate key `shape_of` knows, checking shapes.
/// Returns the resolved keys in parameter order, or the error naming the missing keys (first
/// candidates) or the mismatched shape.
pub fn resolve(
    params: &[ParamInfo],
    candidates: impl Fn(&ParamInfo) -> Vec<String>,
    shape_of: impl Fn(&str) -> Option<Vec<usize>>,
    file: &Path,
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut found = Vec::with_capacity(params.len());
    for p in params {
        let keys = candidates(p);
        match keys.iter().find_map(|k| Some((k, shape_of(k)?))) {
            Some((key, shape)) => {
                if !compatible(p, &shape) {
                    return Err(ModelError::ShapeMismatch {
                        path: file.to_path_buf(),
                        key: key.clone(),
                        expected: checkpoint_shape(p),
                        found: shape,
                    });
                }
                found.push(key.clone());
            }
            None => missing.push(keys.into_iter().next().unwrap_or_default()),
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(ModelError::MissingKeys {
            path: file.to_path_buf(),
            keys: missing,
        })
    }
}
