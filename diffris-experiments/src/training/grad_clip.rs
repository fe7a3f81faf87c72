//! Clipping of a step's gradients by their global norm, as PyTorch's `clip_grad_norm_` does it
//! (what diffusers' training scripts call before every optimizer step, `--max_grad_norm`, 1.0
//! by default there): the L2 norm of all gradients taken together, and every gradient scaled by
//! `max_norm / (norm + 1e-6)` when that is below 1.
//!
//! Burn's `GradientClipping::Norm` clips each parameter's gradient by its own norm, a different
//! method. [`ClipGlobalNorm`] wraps an optimizer instead: it clips the gradients it is handed and
//! passes them on, so its record is the wrapped optimizer's (checkpoints written without it read
//! back unchanged). On several devices the norm is that of the gradients' sum over the devices
//! (the batch's gradient), and each device's share is scaled by the same factor.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, BackendTypes};
use burn::tensor::{ElementConversion, Tensor};

/// PyTorch's guard against a zero norm in `clip_grad_norm_`.
const EPS: f64 = 1e-6;

/// An optimizer whose gradients are first clipped to a global norm of at most `max_norm`
/// (`None`: passed on as they are).
#[derive(Clone)]
pub struct ClipGlobalNorm<O> {
    inner: O,
    max_norm: Option<f64>,
}

impl<O> ClipGlobalNorm<O> {
    pub fn new(inner: O, max_norm: Option<f64>) -> Self {
        Self { inner, max_norm }
    }

    /// The factor of this step's gradients (`None`: no clipping).
    fn factor<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: &[&GradientsParams],
    ) -> Option<f64> {
        let max_norm = self.max_norm?;
        clip_factor(global_norm::<B, M>(module, grads), max_norm)
    }
}

/// The factor every gradient is multiplied by: `max_norm / (norm + 1e-6)` where that is below
/// 1, else `None` (left as they are).
pub fn clip_factor(norm: f64, max_norm: f64) -> Option<f64> {
    let factor = max_norm / (norm + EPS);
    (factor < 1.0).then_some(factor)
}

/// The global L2 norm of the sum of `grads` over the devices, over the parameters of `module`.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &[&GradientsParams],
) -> f64 {
    let mut visitor = SquaredNorm::<B> {
        grads,
        device: None,
        total: None,
    };
    module.visit(&mut visitor);
    // One read of the device's sum for the whole step, not one per parameter.
    visitor.total.map_or(0.0, |t| {
        let squares: f64 = t.into_scalar().elem();
        squares.sqrt()
    })
}

/// Sums each parameter's squared gradient (summed over the devices first), on the first device
/// that holds one.
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a [&'a GradientsParams],
    device: Option<<B::InnerBackend as BackendTypes>::Device>,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut sum: Option<Tensor<B::InnerBackend, D>> = None;
        for grads in self.grads {
            if let Some(g) = grads.get::<B::InnerBackend, D>(param.id) {
                let device = self.device.get_or_insert_with(|| g.device()).clone();
                let g = g.to_device(&device);
                sum = Some(match sum {
                    None => g,
                    Some(s) => s + g,
                });
            }
        }
        if let Some(s) = sum {
            let squares = s.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                None => squares,
                Some(t) => t + squares,
            });
        }
    }
}

/// Multiplies every gradient of the module's parameters by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

fn scale<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    module.visit(&mut Scale { grads, factor });
}

impl<M, B, O> Optimizer<M, B> for ClipGlobalNorm<O>
where
    M: AutodiffModule<B>,
    B: AutodiffBackend,
    O: Optimizer<M, B>,
{
    type Record = O::Record;

    fn step(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        if let Some(factor) = self.factor::<B, M>(&module, &[&grads]) {
            scale::<B, M>(&module, &mut grads, factor);
        }
        self.inner.step(lr, module, grads)
    }

    fn step_multi(&mut self, lr: f64, module: M, mut grads: MultiGradientsParams) -> M {
        let all: Vec<&GradientsParams> = grads.grads.iter().map(|(g, _)| g).collect();
        if let Some(factor) = self.factor::<B, M>(&module, &all) {
            for (g, _) in &mut grads.grads {
                scale::<B, M>(&module, g, factor);
            }
        }
        self.inner.step_multi(lr, module, grads)
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            max_norm: self.max_norm,
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

    /// The gradients of `sum(a * ca) + sum(b * cb)`: `ca` and `cb` themselves.
    fn grads(m: &Two<AB>, ca: [f32; 2], cb: [[f32; 2]; 2]) -> GradientsParams {
        let device = Default::default();
        let loss = (m.a.val() * Tensor::<AB, 1>::from_floats(ca, &device)).sum()
            + (m.b.val() * Tensor::<AB, 2>::from_floats(cb, &device)).sum();
        GradientsParams::from_grads(loss.backward(), m)
    }

    fn flat(m: &Two<AB>) -> Vec<f32> {
        let mut v: Vec<f32> = m.a.val().into_data().to_vec().unwrap();
        v.extend(m.b.val().into_data().to_vec::<f32>().unwrap());
        v
    }

    /// Plain SGD at rate 1 moves each weight by minus its (clipped) gradient.
    fn moved(max_norm: Option<f64>, ca: [f32; 2], cb: [[f32; 2]; 2]) -> Vec<f32> {
        let m = two();
        let before = flat(&m);
        let g = grads(&m, ca, cb);
        let mut optim = ClipGlobalNorm::new(SgdConfig::new().init::<AB, Two<AB>>(), max_norm);
        let after = flat(&optim.step(1.0, m, g));
        before.iter().zip(after).map(|(b, a)| b - a).collect()
    }

    /// Gradients (3, 0) and ((0, 4), (0, 0)): global norm 5 by hand.
    const CA: [f32; 2] = [3.0, 0.0];
    const CB: [[f32; 2]; 2] = [[0.0, 4.0], [0.0, 0.0]];

    #[test]
    fn the_global_norm_is_that_of_all_gradients_together() {
        let m = two();
        let g = grads(&m, CA, CB);
        assert!((global_norm::<AB, _>(&m, &[&g]) - 5.0).abs() < 1e-9);
        // Two devices' shares sum to the batch's gradient: (6, 0), ((0, 8), (0, 0)) -> 10.
        assert!((global_norm::<AB, _>(&m, &[&g, &g]) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn gradients_above_the_norm_are_scaled_to_it_and_those_below_are_left() {
        // max 1: every gradient times 1 / (5 + 1e-6).
        let f = 1.0 / (5.0 + 1e-6);
        let expect = [3.0 * f, 0.0, 0.0, 4.0 * f, 0.0, 0.0];
        for (got, want) in moved(Some(1.0), CA, CB).iter().zip(expect) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // max 10 and no clipping: the gradients as they are.
        let plain = [3.0, 0.0, 0.0, 4.0, 0.0, 0.0];
        assert_eq!(moved(Some(10.0), CA, CB), plain);
        assert_eq!(moved(None, CA, CB), plain);
        assert_eq!(
            clip_factor(5.0, 5.0 + 1e-6),
            None,
            "a factor of exactly 1 clips nothing"
        );
    }

    #[test]
    fn several_devices_are_clipped_by_the_norm_of_their_sum() {
        let m = two();
        let before = flat(&m);
        let device: burn::tensor::Device<Flex> = Default::default();
        let id = burn::tensor::backend::DeviceOps::id(&device);
        let shares = MultiGradientsParams {
            grads: vec![(grads(&m, CA, CB), id), (grads(&m, CA, CB), id)],
        };
        let mut optim = ClipGlobalNorm::new(SgdConfig::new().init::<AB, Two<AB>>(), Some(1.0));
        let after = flat(&optim.step_multi(1.0, m, shares));
        // The sum (6, 0, 0, 8, 0, 0) has norm 10: scaled by 1 / (10 + 1e-6).
        let f = 1.0 / (10.0 + 1e-6);
        let expect = [6.0 * f, 0.0, 0.0, 8.0 * f, 0.0, 0.0];
        for ((b, a), want) in before.iter().zip(after).zip(expect) {
            assert!(((b - a) as f64 - want).abs() < 1e-6, "{} vs {want}", b - a);
        }
    }
}
