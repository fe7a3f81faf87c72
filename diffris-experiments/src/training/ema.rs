//! An exponential moving average of a module's weights, as diffusers' `EMAModel` keeps it for
//! `train_text_to_image.py --use_ema` (its defaults: no warm-up, no delay, minimum decay 0):
//! after the optimizer's `n`-th step every shadow weight moves towards the new weight,
//! `shadow -= (1 - decay_n) * (shadow - weight)`, with `decay_n = min(max, (n) / (n + 9))` for
//! `n >= 2` and 0 at the first step (the shadow starts as a copy of the weights after it).
//!
//! Burn has no EMA, and a train step cannot keep state (it sees the model by reference), so
//! [`Ema`] wraps the optimizer: it runs the wrapped step, then moves the shadow. Its record is
//! the wrapped optimizer's with the shadow and its step count, so burn-train's checkpointer
//! saves and restores the average with the optimizer's moments and a resumed run continues it
//! exactly. The shadow lives in a slot shared by the wrapper's clones ([`Ema::shadow`] reads it
//! after a launch, which hands back only the model).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

/// The decay of the `step`-th update (from 1) with at most `max`: diffusers'
/// `EMAModel.get_decay` without warm-up, `(1 + k) / (10 + k)` for `k = step - 1 > 0`, else 0.
pub fn ema_decay(step: usize, max: f64) -> f64 {
    let k = step.saturating_sub(1);
    if k == 0 {
        return 0.0;
    }
    let k = k as f64;
    ((1.0 + k) / (10.0 + k)).min(max)
}

/// The average and what it needs besides the wrapped optimizer.
struct State<M> {
    /// Optimizer steps averaged so far.
    steps: usize,
    /// The average (`None` before the first step).
    shadow: Option<M>,
    /// A module of the right structure to read a record into, until the first step (burn-train
    /// restores checkpoints before training); dropped then, so it keeps no old weights alive.
    template: Option<M>,
}

/// An optimizer whose module's weights are averaged after every step with at most `decay`
/// (`None`: no average, the wrapped optimizer alone).
#[derive(Clone)]
pub struct Ema<O, M> {
    inner: O,
    decay: Option<f64>,
    state: Arc<Mutex<State<M>>>,
}

impl<O, M: Clone> Ema<O, M> {
    /// Wraps `inner`; `template` is the module being trained (it gives a restored record its
    /// structure).
    pub fn new(inner: O, decay: Option<f64>, template: &M) -> Self {
        Self {
            inner,
            decay,
            state: Arc::new(Mutex::new(State {
                steps: 0,
                shadow: None,
                template: decay.map(|_| template.clone()),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The average after the steps taken so far (restored ones included), with their count;
    /// `None` when no average is kept or no step was averaged.
    pub fn shadow(&self) -> Option<(usize, M)> {
        let st = self.state();
        st.shadow.clone().map(|s| (st.steps, s))
    }
}

impl<O, M> Ema<O, M> {
    /// Moves the shadow towards `module`, the weights after a step.
    fn update<B: AutodiffBackend>(&self, module: &M)
    where
        M: AutodiffModule<B>,
    {
        let Some(max) = self.decay else { return };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.template = None;
        st.steps += 1;
        let decay = ema_decay(st.steps, max);
        st.shadow = Some(match st.shadow.take() {
            Some(shadow) if decay > 0.0 => {
                let mut weights = Weights::<B>(HashMap::new());
                module.visit(&mut weights);
                shadow.map(&mut Towards::<B> {
                    weights: weights.0,
                    rate: 1.0 - decay,
                })
            }
            _ => module.clone(),
        });
    }
}

/// Every float weight of a module, flattened, by its id.
struct Weights<B: AutodiffBackend>(HashMap<ParamId, Tensor<B::InnerBackend, 1>>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Weights<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let w = param.val().inner();
        let n = w.shape().num_elements();
        self.0.insert(param.id, w.reshape([n]));
    }
}

/// Moves each shadow weight by `rate` of its distance to the weight of the same id.
struct Towards<B: AutodiffBackend> {
    weights: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    rate: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Towards<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let s = tensor.inner();
        let w = self
            .weights
            .remove(&id)
            .expect("the averaged module and the trained one hold the same parameters")
            .reshape(s.shape());
        // diffusers: s_param.sub_(one_minus_decay * (s_param - param))
        let moved = s.clone() - (s - w).mul_scalar(self.rate);
        Param::from_mapped_value(id, Tensor::from_inner(moved), mapper)
    }
}

impl<M, B, O> Optimizer<M, B> for Ema<O, M>
where
    M: AutodiffModule<B>,
    B: AutodiffBackend,
    O: Optimizer<M, B>,
{
    /// The wrapped optimizer's record, and the step count and average where one is kept.
    type Record = (O::Record, Option<(usize, M::Record)>);

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let module = self.inner.step(lr, module, grads);
        self.update::<B>(&module);
        module
    }

    fn step_multi(&mut self, lr: f64, module: M, grads: MultiGradientsParams) -> M {
        let module = self.inner.step_multi(lr, module, grads);
        self.update::<B>(&module);
        module
    }

    fn to_record(&self) -> Self::Record {
        let st = self.state();
        let average = st.shadow.clone().map(|s| (st.steps, s.into_record()));
        (self.inner.to_record(), average)
    }

    fn load_record(self, (inner, average): Self::Record) -> Self {
        {
            let mut st = self.state();
            match average {
                Some((steps, record)) => {
                    let base = st
                        .shadow
                        .take()
                        .or_else(|| st.template.take())
                        .expect("an averaging optimizer restores its record before it steps");
                    st.shadow = Some(base.load_record(record));
                    st.steps = steps;
                }
                None => {
                    st.shadow = None;
                    st.steps = 0;
                }
            }
        }
        Self {
            inner: self.inner.load_record(inner),
            decay: self.decay,
            state: self.state,
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::optim::SgdConfig;
    use burn::tensor::backend::Backend;

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        a: Param<Tensor<B, 1>>,
        b: Param<Tensor<B, 2>>,
    }

    fn two() -> Two<AB> {
        let device = Default::default();
        Two {
            a: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)),
            b: Param::from_tensor(Tensor::from_floats([[0.5, -1.0], [2.0, 0.0]], &device)),
        }
    }

    /// The gradients of `sum(a * c) + sum(b * c)` with `c` broadcast: `c` everywhere.
    fn grads(m: &Two<AB>, c: f32) -> GradientsParams {
        let loss = m.a.val().sum().mul_scalar(c) + m.b.val().sum().mul_scalar(c);
        GradientsParams::from_grads(loss.backward(), m)
    }

    fn flat(m: &Two<AB>) -> Vec<f64> {
        let mut v: Vec<f32> = m.a.val().into_data().to_vec().unwrap();
        v.extend(m.b.val().into_data().to_vec::<f32>().unwrap());
        v.into_iter().map(f64::from).collect()
    }

    type Sgd = burn::optim::adaptor::OptimizerAdaptor<burn::optim::Sgd<Flex>, Two<AB>, AB>;

    fn optimizer(m: &Two<AB>, decay: Option<f64>) -> Ema<Sgd, Two<AB>> {
        Ema::new(SgdConfig::new().init(), decay, m)
    }

    #[test]
    fn decays_as_diffusers_ema_model() {
        // EMAModel.get_decay(n) with its defaults: 0 at the first step, (1 + k) / (10 + k)
        // with k = n - 1 after, capped at the maximum.
        assert_eq!(ema_decay(1, 0.9999), 0.0);
        assert_eq!(ema_decay(2, 0.9999), 2.0 / 11.0);
        assert_eq!(ema_decay(10, 0.9999), 10.0 / 19.0);
        assert_eq!(ema_decay(3, 0.1), 0.1);
        assert_eq!(ema_decay(1_000_000, 0.9999), 0.9999);
    }

    /// Three SGD steps at rate 1 with gradients 1, 2, 3: the average after them, by hand from
    /// the weights after each step (the first step copies them).
    #[test]
    fn the_shadow_is_the_hand_computed_average() {
        let mut m = two();
        let mut opt = optimizer(&m, Some(0.9));
        let mut by_hand: Vec<f64> = Vec::new();
        for (n, c) in [1.0f32, 2.0, 3.0].into_iter().enumerate() {
            let g = grads(&m, c);
            m = opt.step(1.0, m, g);
            let w = flat(&m);
            let d = ema_decay(n + 1, 0.9);
            by_hand = if n == 0 {
                w
            } else {
                by_hand
                    .iter()
                    .zip(&w)
                    .map(|(s, w)| s - (1.0 - d) * (s - w))
                    .collect()
            };
        }
        // Weights 1, 2, 0.5, -1, 2, 0 minus 1, 3, 6: the first weight is 0, -2, -5 and its
        // shadow 0 -> 0 - (1 - 2/11)(0 - (-2)) = -18/11 -> s - (1 - 3/12)(s - (-5)).
        let s2 = -18.0 / 11.0;
        let s3 = s2 - 0.75 * (s2 + 5.0);
        assert!((by_hand[0] - s3).abs() < 1e-12, "{} vs {s3}", by_hand[0]);
        let (steps, shadow) = opt.shadow().unwrap();
        assert_eq!(steps, 3);
        for (got, want) in flat(&shadow).iter().zip(&by_hand) {
            // f32 weights against an f64 recurrence: a few ulps of values below 10.
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert_ne!(flat(&shadow), flat(&m), "the shadow lags the weights");
    }

    /// A record taken after two steps, read into a fresh optimizer, continues the average to the
    /// very bits of one that kept going; without a decay the record holds no average.
    #[test]
    fn a_restored_record_continues_exactly() {
        let run = |restore_after: Option<usize>| {
            let mut m = two();
            let mut opt = optimizer(&m, Some(0.5));
            for (n, c) in [1.0f32, -2.0, 0.5, 4.0].into_iter().enumerate() {
                if restore_after == Some(n) {
                    let record = opt.to_record();
                    opt = optimizer(&m, Some(0.5)).load_record(record);
                }
                let g = grads(&m, c);
                m = opt.step(1.0, m, g);
            }
            let (steps, shadow) = opt.shadow().unwrap();
            (steps, flat(&shadow))
        };
        assert_eq!(run(None), run(Some(2)));
        let m = two();
        let mut plain = optimizer(&m, None);
        let m = plain.step(1.0, m.clone(), grads(&m, 1.0));
        assert!(plain.shadow().is_none() && plain.to_record().1.is_none());
        assert_eq!(flat(&m)[0], 0.0, "the wrapped step ran");
    }
}
