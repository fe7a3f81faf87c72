//! Data-parallel training on several devices: burn-train's `MultiDevice` strategy with the
//! gradients summed in the order of the epoch's plan.
//!
//! burn-train 0.21's `ExecutionStrategy::MultiDevice` (optimizer on the main device) sends one
//! pass to each device's worker (its `MultiDevicesTrainStep`), collects the workers' gradients
//! **in the order the workers finish**, sums them with a `GradientsAccumulator` and steps the
//! optimizer. f32 addition is not associative, so with three or more passes per optimizer step
//! (three devices, or two with accumulation) the sum, and every weight after it, depends on
//! thread timing: two runs with the same seed drift apart in the last bits and then further.
//! That is the one thing it cannot express that diffris needs (a run is reproducible on its
//! machine), and the strategy cannot be configured to order the sum. [`OrderedMultiDevice`] is
//! that strategy's loop with one change: each round's outputs are sorted by their pass index
//! in the epoch's plan before they are summed and logged. Everything else is burn-train's: the
//! split of the loader over the devices, its accumulator, learner, optimizer step,
//! checkpointer, early stopping and event processor. No gradient crosses devices except through
//! burn's `GradientsParams::to_device`, as in its own strategy.
//!
//! The workers are burn-train's `MultiDevicesTrainStep` loop (fork the model to the device, run
//! the step) in [`Workers`], which returns a pass that panics as an error instead of waiting
//! forever for its output (see there); the run then stops with that error, naming the device.
//! One more change: burn-train forks the whole model to a worker's device for every pass, the
//! frozen SD stack included (3.8 GB at SD-1.5 size, copied from the first GPU each pass); each
//! worker here keeps its device's copy of the frozen stack, made at its first pass
//! ([`with_frozen_of`]), and forks only the trained parts (a tensor already on the device is
//! not copied again). The frozen stack never changes, so the numbers are the same.

use std::cell::RefCell;
use std::marker::PhantomData;

use burn::data::dataloader::Progress;
use burn::data::dataloader::split::split_dataloader;
use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::DeviceOps;
use burn::train::{
    EventProcessorTraining, InferenceStep, Learner, LearnerEvent, LearningComponentsTypes,
    SupervisedLearningStrategy, SupervisedTrainingEventProcessor, TrainLoader, TrainStep,
    TrainingComponents, TrainingItem, TrainingModel, ValidLoader,
};
use diffris_kernels::SdAutodiffBackend;
use diffris_model::sd::clip::ClipTextModel;
use diffris_model::sd::unet::UNet2DConditionModel;
use diffris_model::sd::vae::VaeEncoder;

use super::step::Trainee;
use super::workers::Workers;
use crate::device::turnstile::{PassOver, Ticket};
use crate::inputs::split::EncodedBatch;

/// A trained module whose passes the ordered loop can share over devices: each pass carries its
/// place in the epoch's plan, and so does its output.
pub trait PlannedModel<B: SdAutodiffBackend>: TrainStep + AutodiffModule<B> + 'static {
    /// What a worker keeps on its device between passes (the frozen SD stack of a DiffRIS
    /// model; nothing for a module that is all trained).
    type Kept: Clone + Send + 'static;

    /// The pass's ticket (its place in the plan).
    fn ticket(pass: &<Self as TrainStep>::Input) -> Option<Ticket>;

    /// The index in the plan of the pass that gave `output`.
    fn pass_index(output: &<Self as TrainStep>::Output) -> usize;

    /// The module a worker runs on `device`, with what it keeps there in `kept`.
    fn on_device(self, device: &B::Device, kept: &RefCell<Option<Self::Kept>>) -> Self;
}

impl<B: SdAutodiffBackend> PlannedModel<B> for Trainee<B> {
    type Kept = Frozen<B>;

    fn ticket(pass: &EncodedBatch<B>) -> Option<Ticket> {
        pass.ticket.clone()
    }

    fn pass_index(output: &super::step::SegOutput<B>) -> usize {
        output.pass
    }

    fn on_device(self, device: &B::Device, kept: &RefCell<Option<Frozen<B>>>) -> Self {
        with_frozen_of(self, device, kept).fork(device)
    }
}

/// burn-train's multi-device loop (optimizer on the first device, which also validates) with
/// each round's gradients summed in plan order.
pub struct OrderedMultiDevice<B: SdAutodiffBackend, M = Trainee<B>> {
    devices: Vec<B::Device>,
    _model: PhantomData<M>,
}

impl<B: SdAutodiffBackend, M> OrderedMultiDevice<B, M> {
    pub fn new(devices: Vec<B::Device>) -> Self {
        Self {
            devices,
            _model: PhantomData,
        }
    }
}

impl<B, M, LC> SupervisedLearningStrategy<LC> for OrderedMultiDevice<B, M>
where
    B: SdAutodiffBackend,
    M: PlannedModel<B> + Send,
    <M as AutodiffModule<B>>::InnerModule: InferenceStep,
    <M as TrainStep>::Input: Send,
    <M as TrainStep>::Output: Send,
    LC: LearningComponentsTypes<
            Backend = B,
            TrainingModel = M,
            InferenceModel = <M as AutodiffModule<B>>::InnerModule,
        >,
{
    fn fit(
        &self,
        components: TrainingComponents<LC>,
        mut learner: Learner<LC>,
        train: TrainLoader<LC>,
        valid: ValidLoader<LC>,
        starting_epoch: usize,
    ) -> (TrainingModel<LC>, SupervisedTrainingEventProcessor<LC>) {
        let main = self.devices[0].clone();
        let train = split_dataloader(train, &self.devices);
        let valid = valid.to_device(main.inner());
        learner.fork(&main);
        let mut events = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let mut early_stopping = components.early_stopping;
        let interrupter = components.interrupter;
        let accumulation = components.grad_accumulation.unwrap_or(1);
        let kept = RefCell::new(None);
        let workers = Workers::new(
            &self.devices,
            move |device: &B::Device, (model, batch): (M, <M as TrainStep>::Input)| {
                // However the pass ends, the passes after it get their turn.
                let _over = PassOver(M::ticket(&batch));
                let model = model.on_device(device, &kept);
                TrainStep::step(&model, batch)
            },
        );

        for epoch in starting_epoch..=components.num_epochs {
            let global = Progress::new(epoch, components.num_epochs);
            let mut iterators: Vec<_> = train.iter().map(|d| d.iter()).collect();
            let mut accumulator = GradientsAccumulator::new();
            let (mut iteration, mut accumulated) = (0, 0);
            loop {
                let (round, progress) = next_round(iterators.as_mut_slice(), &learner.model());
                if round.iter().all(Option::is_none) {
                    break;
                }
                let mut items = match workers.round(round) {
                    Ok(items) => items,
                    Err(failure) => {
                        interrupter.stop(Some(&failure.to_string()));
                        break;
                    }
                };
                // The one change to burn-train's loop: plan order, not arrival order.
                items.sort_by_key(|item| M::pass_index(&item.item));
                learner.lr_step();
                let mut outputs = Vec::with_capacity(items.len());
                for item in items {
                    let grads = item.grads.to_device(&main, &learner.model());
                    accumulator.accumulate(&learner.model(), grads);
                    outputs.push(item.item);
                }
                accumulated += 1;
                if accumulated >= accumulation {
                    learner.optimizer_step(accumulator.grads());
                    accumulated = 0;
                }
                for output in outputs {
                    iteration += 1;
                    events.process_train(LearnerEvent::ProcessedItem(TrainingItem::new(
                        output,
                        progress.clone(),
                        global.clone(),
                        Some(iteration),
                        Some(learner.lr_current()),
                    )));
                }
                if interrupter.should_stop() {
                    break;
                }
            }
            events.process_train(LearnerEvent::EndEpoch(epoch));
            if interrupter.should_stop() {
                break;
            }

            let model = learner.model().valid();
            let mut iterator = valid.iter();
            let mut iteration = 0;
            while let Some(batch) = iterator.next() {
                let progress = iterator.progress();
                iteration += 1;
                let output = model.step(batch);
                events.process_valid(LearnerEvent::ProcessedItem(TrainingItem::new(
                    output,
                    progress,
                    global.clone(),
                    Some(iteration),
                    None,
                )));
                if interrupter.should_stop() {
                    break;
                }
            }
            events.process_valid(LearnerEvent::EndEpoch(epoch));

            if let Some(checkpointer) = &mut checkpointer {
                checkpointer.checkpoint(&learner, epoch, &components.event_store);
            }
            if let Some(early) = &mut early_stopping
                && early.should_stop(epoch, &components.event_store)
            {
                break;
            }
        }
        (learner.model(), events)
    }
}

/// The frozen SD stack of a model (never trained), as one worker keeps it on its device.
pub type Frozen<B> = (
    ClipTextModel<B>,
    VaeEncoder<B>,
    Option<UNet2DConditionModel<B>>,
);

/// `model` with the frozen stack of `cache`, which holds it on `device` (copied there from
/// `model` on the first call).
fn with_frozen_of<B: SdAutodiffBackend>(
    mut model: Trainee<B>,
    device: &B::Device,
    cache: &RefCell<Option<Frozen<B>>>,
) -> Trainee<B> {
    let mut cache = cache.borrow_mut();
    let m = &mut model.model;
    let (text, vae, unet) = cache.get_or_insert_with(|| {
        (
            m.text_encoder.clone().fork(device),
            m.vae.clone().fork(device),
            m.frozen_unet_mut().map(|u| u.clone().fork(device)),
        )
    });
    m.text_encoder = text.clone();
    m.vae = vae.clone();
    // A trained UNet is a parameter set: burn-train forks it with the rest.
    if let (Some(slot), Some(unet)) = (m.frozen_unet_mut(), unet.as_ref()) {
        *slot = unet.clone();
    }
    model
}

/// One pass for each device whose loader part has one left (with the model to fork), and the
/// loaders' summed progress: burn-train's `MultiDevicesTrainStep::step` up to sending.
#[allow(clippy::type_complexity)]
fn next_round<B: SdAutodiffBackend, M: PlannedModel<B>>(
    loaders: &mut [Box<
        dyn burn::data::dataloader::DataLoaderIterator<<M as TrainStep>::Input> + '_,
    >],
    model: &M,
) -> (Vec<Option<(M, <M as TrainStep>::Input)>>, Progress) {
    let (mut total, mut processed) = (0, 0);
    let round = loaders
        .iter_mut()
        .map(|loader| {
            let batch = loader.next()?;
            let progress = loader.progress();
            total += progress.items_total;
            processed += progress.items_processed;
            Some((model.clone(), batch))
        })
        .collect();
    (round, Progress::new(processed, total))
}
