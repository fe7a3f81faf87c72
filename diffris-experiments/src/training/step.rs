//! The train and inference steps of DiffRIS on cached encoder outputs: loss and the per-sample
//! intersection and union that the epoch metrics sum.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::train::metric::{Adaptor, ItemLazy};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use diffris_kernels::{SdAutodiffBackend, SdBackend};
use diffris_model::diffris::DiffRis;

use crate::inputs::split::EncodedBatch;

/// The trained module: DiffRIS (whose frozen parts are not parameters).
#[derive(Module, Debug)]
pub struct Trainee<B: SdBackend> {
    pub model: DiffRis<B>,
}

/// Loss and per-sample intersection/union (at the network size) of one batch.
pub struct SegOutput<B: SdBackend> {
    /// The pass's index in its epoch's plan (0 where the plan is not shared over devices).
    pub pass: usize,
    pub loss: Tensor<B, 1>,
    pub intersection: Tensor<B, 1>,
    pub union: Tensor<B, 1>,
}

/// [`SegOutput`] as plain numbers, for the metrics thread.
#[derive(Clone, Debug, Default)]
pub struct SegStats {
    pub loss: f64,
    pub intersection: Vec<f64>,
    pub union: Vec<f64>,
}

impl<B: SdBackend> ItemLazy for SegOutput<B> {
    type ItemSync = SegStats;

    fn sync(self) -> SegStats {
        let v = |t: Tensor<B, 1>| t.into_data().iter::<f64>().collect::<Vec<f64>>();
        SegStats {
            loss: v(self.loss)[0],
            intersection: v(self.intersection),
            union: v(self.union),
        }
    }
}

impl Adaptor<SegStats> for SegStats {
    fn adapt(&self) -> SegStats {
        self.clone()
    }
}

/// Per-sample `(I, U)` of `logits > 0` against `mask`.
///
/// # Shapes
/// `[B, 1, H, W]` both -> (`[B]`, `[B]`).
pub fn intersection_union<B: SdBackend>(
    logits: Tensor<B, 4>,
    mask: Tensor<B, 4>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let b = logits.dims()[0];
    let pred = logits.greater_elem(0.0).float();
    let inter = (pred.clone() * mask.clone())
        .reshape([b as i32, -1])
        .sum_dim(1)
        .reshape([b]);
    let total = (pred + mask)
        .reshape([b as i32, -1])
        .sum_dim(1)
        .reshape([b]);
    (inter.clone(), total - inter)
}

impl<B: SdBackend> Trainee<B> {
    fn seg_step(&self, batch: EncodedBatch<B>, training: bool) -> (Tensor<B, 1>, SegOutput<B>) {
        let out = self
            .model
            .forward_encoded(batch.latent, batch.text, batch.eos, training);
        let loss = self.model.loss(&out, batch.mask.clone());
        let (intersection, union) = intersection_union(out.logits.detach(), batch.mask);
        let output = SegOutput {
            pass: batch.ticket.as_ref().map_or(0, |t| t.pass),
            loss: loss.clone().detach(),
            intersection,
            union,
        };
        (loss, output)
    }
}

impl<B: SdAutodiffBackend> TrainStep for Trainee<B> {
    type Input = EncodedBatch<B>;
    type Output = SegOutput<B>;

    fn step(&self, batch: EncodedBatch<B>) -> TrainOutput<SegOutput<B>> {
        // On one device the step runs on the backend's compute pool (`PoolOps`); on several,
        // where its forward waits for its turn, on this thread.
        if batch.ticket.is_some() {
            self.train_pass(batch)
        } else {
            B::sd_on_pool(|| self.train_pass(batch))
        }
    }
}

impl<B: SdAutodiffBackend> Trainee<B> {
    fn train_pass(&self, batch: EncodedBatch<B>) -> TrainOutput<SegOutput<B>> {
        let weight = batch.loss_weight;
        // On several devices the forward (every random draw) waits for the passes before it in
        // the epoch's plan; the backward overlaps with the other devices' passes.
        let ticket = batch.ticket.clone();
        let turn = ticket.as_ref().map(|t| t.wait());
        let (loss, output) = self.seg_step(batch, true);
        drop(turn);
        // A micro-batch's gradients are summed with the other passes of its batch (burn-train's
        // accumulation), so its loss counts by its share of the batch. Without accumulation the
        // weight is 1 and the graph is left as it is.
        let loss = if weight == 1.0 {
            loss
        } else {
            loss.mul_scalar(weight)
        };
        TrainOutput::new(self, loss.backward(), output)
    }
}

impl<B: SdBackend> InferenceStep for Trainee<B> {
    type Input = EncodedBatch<B>;
    type Output = SegOutput<B>;

    fn step(&self, batch: EncodedBatch<B>) -> SegOutput<B> {
        // Validation waits on no other device: on the compute pool (`PoolOps`) either way.
        B::sd_on_pool(|| self.seg_step(batch, false).1)
    }
}
