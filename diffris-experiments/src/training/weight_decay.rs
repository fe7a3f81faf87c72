//! Weight decay by parameter group, as the code lineage of DiffRIS applies it: AdamW decays the
//! weights of linear, convolution and attention layers, and leaves alone the parameters whose
//! size carries meaning (norm scales and shifts, biases, learnt tokens and embeddings, prompts,
//! temperatures and layer scales; LAVT and VPD exclude norms, CARIS also its prompts).
//!
//! Burn's AdamW decays every parameter it is given. [`GroupedAdamW`] holds two of Burn's
//! optimizers, one with the decay and one without, and hands each the gradients of its group:
//! each parameter is updated by exactly one of them, with the formula and state Burn's AdamW
//! keeps. Under [`DecayScope::All`] the second group is empty and the step is Burn's AdamW's.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, MultiGradientsParams, Optimizer};
use burn::record::Record;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::config::recipe::DecayScope;

/// Parameter names that take no decay wherever they are: biases, DiffRIS's learnt query
/// tokens, positional and level embeddings, CAMD's prompts, OAQIL's temperature, the VPD
/// adapter's and CAMD's scales.
pub const EXEMPT_NAMES: [&str; 8] = [
    "bias",
    "queries",
    "pos_embed",
    "level_embed",
    "prompts",
    "tau",
    "gamma",
    "scale",
];

/// Modules all of whose parameters take no decay.
pub const EXEMPT_MODULES: [&str; 3] = ["Struct:LayerNorm", "Struct:GroupNorm", "Struct:BatchNorm"];

/// The parameters of `module` that take no decay under `scope`, as (path, id) in visiting order.
pub fn exempt<B: Backend, M: Module<B>>(module: &M, scope: DecayScope) -> Vec<(String, ParamId)> {
    if scope == DecayScope::All {
        return vec![];
    }
    let mut visitor = Exempt::default();
    module.visit(&mut visitor);
    visitor.found
}

/// Where a visitor is in a module: (field name, type of the struct holding it) from the root.
#[derive(Default)]
struct Path(Vec<(String, String)>);

impl Path {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.0.push((name.to_string(), container_type.to_string()));
    }

    /// Whether the parameter here takes no decay: inside a norm, or named as one that does not.
    fn exempt(&self) -> bool {
        let leaf = self.0.last().map_or("", |(name, _)| name.as_str());
        EXEMPT_NAMES.contains(&leaf)
            || self
                .0
                .iter()
                .any(|(_, holder)| EXEMPT_MODULES.contains(&holder.as_str()))
    }

    fn joined(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(name, _)| name.as_str()).collect();
        names.join(".")
    }
}

#[derive(Default)]
struct Exempt {
    path: Path,
    found: Vec<(String, ParamId)>,
}

impl<B: Backend> ModuleVisitor<B> for Exempt {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.0.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.exempt() {
            self.found.push((self.path.joined(), param.id));
        }
    }
}

/// Moves the gradients of the exempt parameters from one set to another. It decides by the
/// module it visits, not by remembered ids: a resumed run loads its parameters, ids included,
/// from the checkpoint after the optimizer is built. (The visitor also knows each parameter's
/// rank, which taking a gradient out needs.)
struct Split<'a> {
    path: Path,
    from: &'a mut GradientsParams,
    to: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.0.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.exempt()
            && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

/// The optimizer state: each group's AdamW moments, by parameter.
#[derive(Record)]
pub struct GroupedRecord<B: AutodiffBackend> {
    pub decayed: hashbrown::HashMap<ParamId, AdaptorRecord<AdamW, B>>,
    pub exempt: hashbrown::HashMap<ParamId, AdaptorRecord<AdamW, B>>,
}

/// AdamW with weight decay on one group of parameters only (see the module documentation).
#[derive(Clone)]
pub struct GroupedAdamW<M: AutodiffModule<B>, B: AutodiffBackend> {
    decayed: OptimizerAdaptor<AdamW, M, B>,
    exempt: OptimizerAdaptor<AdamW, M, B>,
    scope: DecayScope,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> GroupedAdamW<M, B> {
    /// AdamW as `config` says, its weight decay kept from the parameters `scope` exempts.
    pub fn new(config: &AdamWConfig, scope: DecayScope) -> Self {
        Self {
            decayed: config.init(),
            exempt: config.clone().with_weight_decay(0.0).init(),
            scope,
        }
    }

    fn split(&self, module: &M, mut grads: GradientsParams) -> (GradientsParams, GradientsParams) {
        let mut exempt = GradientsParams::new();
        if self.scope == DecayScope::Lineage {
            module.visit(&mut Split {
                path: Path::default(),
                from: &mut grads,
                to: &mut exempt,
            });
        }
        (grads, exempt)
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for GroupedAdamW<M, B> {
    type Record = GroupedRecord<B>;

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let (decayed, exempt) = self.split(&module, grads);
        let module = self.decayed.step(lr, module, decayed);
        self.exempt.step(lr, module, exempt)
    }

    fn step_multi(&mut self, lr: f64, module: M, grads: MultiGradientsParams) -> M {
        let (mut decayed, mut exempt) = (vec![], vec![]);
        for (g, device) in grads.grads {
            let (d, e) = self.split(&module, g);
            decayed.push((d, device));
            exempt.push((e, device));
        }
        let module = self
            .decayed
            .step_multi(lr, module, MultiGradientsParams { grads: decayed });
        self.exempt
            .step_multi(lr, module, MultiGradientsParams { grads: exempt })
    }

    fn to_record(&self) -> Self::Record {
        GroupedRecord {
            decayed: self.decayed.to_record(),
            exempt: self.exempt.to_record(),
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            decayed: self.decayed.load_record(record.decayed),
            exempt: self.exempt.load_record(record.exempt),
            scope: self.scope,
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};

    type AB = Autodiff<Flex>;

    /// A module with one parameter of each kind the groups tell apart.
    #[derive(Module, Debug)]
    struct Probe<B: Backend> {
        linear: Linear<B>,
        norm: LayerNorm<B>,
        queries: Param<Tensor<B, 2>>,
        tau: Param<Tensor<B, 1>>,
        inner: Vec<Linear<B>>,
    }

    fn probe() -> Probe<AB> {
        let device = Default::default();
        let full = |shape: [usize; 2], v: f32| Param::from_tensor(Tensor::full(shape, v, &device));
        Probe {
            linear: LinearConfig::new(3, 2).init(&device),
            norm: LayerNormConfig::new(2).init(&device),
            queries: full([2, 2], 0.5),
            tau: Param::from_tensor(Tensor::from_floats([2.0], &device)),
            inner: vec![LinearConfig::new(2, 2).with_bias(false).init(&device)],
        }
    }

    #[test]
    fn the_lineage_exempts_norms_biases_tokens_and_temperatures_by_hand() {
        let p = probe();
        let paths: Vec<String> = exempt::<AB, _>(&p, DecayScope::Lineage)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            paths,
            ["linear.bias", "norm.gamma", "norm.beta", "queries", "tau"],
            "the decayed ones are linear.weight and inner.0.weight"
        );
        assert!(exempt::<AB, _>(&p, DecayScope::All).is_empty());
    }

    /// With zero gradients AdamW's update is its decay alone, `w (1 - lr wd)`: a decayed
    /// parameter shrinks by that factor, an exempt one stays as it was.
    #[test]
    fn one_step_decays_the_decayed_group_only() {
        let (lr, wd) = (0.1, 0.5);
        let config = AdamWConfig::new().with_weight_decay(wd as f32);
        for scope in [DecayScope::Lineage, DecayScope::All] {
            let model = probe();
            let before: Vec<Vec<f32>> = values(&model);
            let zero = |t: Tensor<AB, 2>| (t * 0.0).sum();
            let loss = zero(model.linear.weight.val())
                + (model.linear.bias.as_ref().unwrap().val() * 0.0).sum()
                + (model.norm.gamma.val() * 0.0).sum()
                + (model.norm.beta.as_ref().unwrap().val() * 0.0).sum()
                + zero(model.queries.val())
                + (model.tau.val() * 0.0).sum()
                + zero(model.inner[0].weight.val());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let mut optim = GroupedAdamW::new(&config, scope);
            let model = optim.step(lr, model, grads);
            let after = values(&model);
            let decayed_names = ["linear.weight", "inner.0.weight"];
            for ((name, b), a) in NAMES.iter().zip(&before).zip(&after) {
                let factor = if scope == DecayScope::All || decayed_names.contains(name) {
                    1.0 - (lr * wd) as f32
                } else {
                    1.0
                };
                for (x, y) in b.iter().zip(a) {
                    assert!(
                        (x * factor - y).abs() < 1e-6,
                        "{scope:?} {name}: {x} -> {y}"
                    );
                }
            }
            // The record keeps each group's state.
            let record = optim.to_record();
            let exempt = if scope == DecayScope::All { 0 } else { 5 };
            assert_eq!(
                (record.decayed.len(), record.exempt.len()),
                (7 - exempt, exempt)
            );
        }
    }

    const NAMES: [&str; 7] = [
        "linear.weight",
        "linear.bias",
        "norm.gamma",
        "norm.beta",
        "queries",
        "tau",
        "inner.0.weight",
    ];

    fn values(m: &Probe<AB>) -> Vec<Vec<f32>> {
        let v = |t: Tensor<AB, 2>| t.into_data().to_vec::<f32>().unwrap();
        let w = |t: Tensor<AB, 1>| t.into_data().to_vec::<f32>().unwrap();
        vec![
            v(m.linear.weight.val()),
            w(m.linear.bias.as_ref().unwrap().val()),
            w(m.norm.gamma.val()),
            w(m.norm.beta.as_ref().unwrap().val()),
            v(m.queries.val()),
            w(m.tau.val()),
            v(m.inner[0].weight.val()),
        ]
    }
}
