//! Running a trained model for `explain`: one inference pass from the adapted text states (the
//! mask, the cross-attention maps, PCMRD's assignments), one from the raw CLIP states (the maps
//! without the adapter), integrated gradients along the path from a word-less baseline, and one
//! pass per deleted word.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use diffris_data::batch::{RisBatch, RisBatcher, RisItem};
use diffris_data::tokenizer::{CONTEXT_LENGTH, without_span};
use diffris_data::{ClipTokenizer, Word};
use diffris_kernels::SdBackend;
use diffris_model::decoder::DecoderConfig;
use diffris_model::diffris::{DecoderText, DiffRis};
use diffris_model::explain::integrated_gradients;

use super::{
    AttributionReport, Explanation, LevelMaps, Map, StageAssignment, StageReport, WordReport, iou,
};

/// One input to explain.
pub struct Query {
    /// The image at the network size with the expression's tokens (and the ground truth).
    pub item: RisItem,
    pub text: String,
    /// Where it came from, for the record.
    pub source: String,
}

/// How the attributions are computed.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Points of the integrated-gradient path.
    pub steps: usize,
    /// Samples per pass (the path's points, the deleted words).
    pub batch: usize,
}

/// Runs every analysis on `query`. The model must be an inference copy: parameters
/// `no_grad()` and no dropout.
pub fn explain<B: AutodiffBackend + SdBackend>(
    model: &DiffRis<B>,
    tokenizer: &ClipTokenizer,
    query: &Query,
    settings: Settings,
    run: String,
    device: &B::Device,
) -> anyhow::Result<Explanation> {
    let words = tokenizer.words(&query.text)?;
    anyhow::ensure!(
        !words.is_empty(),
        "the expression {:?} has no words to explain",
        query.text
    );
    let (h, w) = (query.item.height, query.item.width);
    let batch: RisBatch<B> = RisBatcher.batch(vec![query.item.clone()], device);
    let latent = model.encode_image(batch.image);
    let clip = model.encode_text(batch.ids);
    let adapted = model.adapter.forward(clip.clone()).detach();
    let eos = batch.eos_index;

    // The decoder reads what the model's own forward gives it: `L'`, or `L` under
    // `decoder_text: clip` (then the attributions below reach `L'` through the UNet only).
    let decoder_text = (model.config.decoder_text == DecoderText::Clip).then(|| clip.clone());
    let (out, maps_adapted) = model.forward_texts(
        latent.clone(),
        adapted.clone(),
        model.decoder_text(adapted.clone(), clip.clone()),
        eos.clone(),
        false,
        true,
    );
    let prediction: Vec<bool> = floats(out.logits.clone())
        .into_iter()
        .map(|l| l > 0.0)
        .collect();
    let assignments: Vec<StageAssignment> = out.assignments.iter().map(stage_maps).collect();
    drop(out);
    let (_, maps_clip) =
        model.forward_context(latent.clone(), clip.clone(), eos.clone(), false, true);

    let mut levels = vec![];
    let mut attention_levels = vec![];
    for (level, (a, c)) in maps_adapted.into_iter().zip(maps_clip).enumerate() {
        if let (Some(a), Some(c)) = (a, c) {
            let [_, _, lh, lw] = a.dims();
            attention_levels.push((level, [lh, lw]));
            levels.push(LevelMaps {
                level,
                adapted: word_maps(&floats(a), &words, lh, lw),
                clip: word_maps(&floats(c), &words, lh, lw),
            });
        }
    }

    // Integrated gradients of the logit sum over the predicted mask (the whole image when the
    // mask is empty), from the states with every word replaced by padding: the empty
    // expression's adapted states at the words' positions (SD-1.x pads with the end token), the
    // input's own start, end and padding states kept. Zero states would make a poor baseline:
    // the decoders that read the text (PCMRD, CAMD) layer-normalise each state, and a layer norm
    // jumps from 0 to its full value within a sliver of the path next to the zero vector, which
    // no quadrature resolves.
    let empty = !prediction.iter().any(|&p| p);
    let region: Vec<f32> = prediction
        .iter()
        .map(|&p| if p || empty { 1.0 } else { 0.0 })
        .collect();
    let region = Tensor::<B, 4>::from_data(TensorData::new(region, [1, 1, h, w]), device);
    let mut keep = vec![1.0f32; CONTEXT_LENGTH];
    for word in &words {
        keep[word.tokens.clone()].iter_mut().for_each(|k| *k = 0.0);
    }
    let keep = Tensor::<B, 3>::from_data(TensorData::new(keep, [1, CONTEXT_LENGTH, 1]), device);
    let padding = padding_states(model, tokenizer, device)?;
    let baseline = adapted.clone() * keep.clone() + padding * keep.neg().add_scalar(1.0);
    let ig = integrated_gradients(
        model,
        latent.clone(),
        adapted,
        baseline,
        decoder_text,
        eos,
        region,
        settings.steps,
        settings.batch,
    );

    let deleted: Vec<String> = words
        .iter()
        .map(|word| without_span(&query.text, word.span.clone()))
        .collect();
    let deletion_masks = predict_texts(model, tokenizer, latent, &deleted, settings.batch, device)?;

    let mean = |m: &Map| m.values.iter().map(|&v| v as f64).sum::<f64>() / m.values.len() as f64;
    let reports: Vec<WordReport> = words
        .iter()
        .enumerate()
        .map(|(k, word)| WordReport {
            word: word.text.clone(),
            tokens: [word.tokens.start, word.tokens.end],
            attribution: ig.per_token[word.tokens.clone()].iter().sum(),
            deleted_text: deleted[k].clone(),
            deletion_iou: iou(&deletion_masks[k], &prediction),
            attention_adapted: levels.iter().map(|l| mean(&l.adapted[k])).collect(),
            attention_clip: levels.iter().map(|l| mean(&l.clip[k])).collect(),
        })
        .collect();
    let stages: Vec<StageReport> = assignments
        .iter()
        .enumerate()
        .map(|(s, stage)| stage_report(s, stage))
        .collect();

    let ground_truth: Option<Vec<bool>> = query
        .item
        .mask
        .as_ref()
        .map(|m| m.iter().map(|&v| v > 0.5).collect());
    let mut skipped = vec![];
    if assignments.is_empty() {
        skipped.push(format!(
            "query-token assignments: the {} has no query tokens",
            decoder_name(model)
        ));
    }
    let mut notes = vec![];
    if !model.config.adapter.enabled {
        notes.push(
            "the CP-adapter is off in this run: the adapted states are the CLIP states, so both \
             rows of cross-attention maps are the same"
                .to_string(),
        );
    }
    if let DecoderConfig::Pcmrd(c) = &model.config.decoder
        && !c.hard_assignment
        && !assignments.is_empty()
    {
        notes.push(
            "this PCMRD assigns softly (Table 6 row 3): the hard panels show each pixel's most \
             probable token, which the model does not round to"
                .to_string(),
        );
    }
    Ok(Explanation {
        run,
        decoder: decoder_name(model),
        source: query.source.clone(),
        expression: query.text.clone(),
        image_size: [h, w],
        foreground_pixels: prediction.iter().filter(|&&p| p).count(),
        ground_truth_iou: ground_truth.as_ref().map(|g| iou(&prediction, g)),
        words: reports,
        attention_levels,
        attribution: AttributionReport {
            target: if empty {
                "logit sum over the whole image (the predicted mask is empty)".into()
            } else {
                "logit sum over the predicted mask".into()
            },
            baseline: "each word's states replaced by the empty expression's (padding) states \
                       at its positions; start, end and padding states kept"
                .into(),
            steps: ig.steps,
            value: ig.value,
            baseline_value: ig.baseline_value,
            total: ig.total(),
            completeness_gap: ig.completeness_gap(),
        },
        stages,
        skipped,
        notes,
        prediction,
        ground_truth,
        levels,
        assignments,
    })
}

/// The adapted states of the empty expression (start token, then end-token padding).
///
/// # Shapes
/// -> `[1, 77, D]`.
fn padding_states<B: SdBackend>(
    model: &DiffRis<B>,
    tokenizer: &ClipTokenizer,
    device: &B::Device,
) -> anyhow::Result<Tensor<B, 3>> {
    let empty = tokenizer.encode("")?;
    let ids: Vec<i64> = empty.ids.iter().map(|&i| i as i64).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, CONTEXT_LENGTH]), device);
    Ok(model.adapter.forward(model.encode_text(ids)).detach())
}

/// The decoder's name as the paper's Table 5 names it.
fn decoder_name<B: SdBackend>(model: &DiffRis<B>) -> String {
    match &model.config.decoder {
        DecoderConfig::Pcmrd(_) => "PCMRD decoder",
        DecoderConfig::Lmp(_) => "LMP decoder",
        DecoderConfig::Oad(_) => "OAD decoder",
        DecoderConfig::Camd(_) => "CAMD decoder",
    }
    .to_string()
}

/// Per word, the sum of its tokens' maps (the probability mass the word gets at each pixel).
///
/// # Shapes
/// `values`: `[1, 77, h, w]` row-major.
pub fn word_maps(values: &[f32], words: &[Word], h: usize, w: usize) -> Vec<Map> {
    let plane = h * w;
    words
        .iter()
        .map(|word| {
            let mut sum = vec![0.0f32; plane];
            for t in word.tokens.clone() {
                for (s, v) in sum.iter_mut().zip(&values[t * plane..(t + 1) * plane]) {
                    *s += v;
                }
            }
            Map {
                height: h,
                width: w,
                values: sum,
            }
        })
        .collect()
}

/// One stage's `[1, N, h, w]` soft assignment as maps.
fn stage_maps<B: SdBackend>(probs: &Tensor<B, 4>) -> StageAssignment {
    let [_, n, h, w] = probs.dims();
    let values = floats(probs.clone());
    StageAssignment {
        tokens: (0..n)
            .map(|t| Map {
                height: h,
                width: w,
                values: values[t * h * w..(t + 1) * h * w].to_vec(),
            })
            .collect(),
    }
}

fn stage_report(stage: usize, a: &StageAssignment) -> StageReport {
    let first = &a.tokens[0];
    let pixels = first.values.len() as f64;
    let hard = a.hard();
    StageReport {
        stage,
        size: [first.height, first.width],
        hard_share: (0..a.tokens.len())
            .map(|t| hard.iter().filter(|&&h| h == t).count() as f64 / pixels)
            .collect(),
        mean_probability: a
            .tokens
            .iter()
            .map(|m| m.values.iter().map(|&v| v as f64).sum::<f64>() / pixels)
            .collect(),
    }
}

/// The binary masks the model predicts for `texts` on one image's latent, `batch` at a time.
fn predict_texts<B: SdBackend>(
    model: &DiffRis<B>,
    tokenizer: &ClipTokenizer,
    latent: Tensor<B, 4>,
    texts: &[String],
    batch: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<bool>>> {
    let mut masks = Vec::with_capacity(texts.len());
    for part in texts.chunks(batch.max(1)) {
        let n = part.len();
        let mut ids = Vec::with_capacity(n * CONTEXT_LENGTH);
        let mut eos = Vec::with_capacity(n);
        for text in part {
            let t = tokenizer.encode(text)?;
            ids.extend(t.ids.iter().map(|&i| i as i64));
            eos.push(t.eos_index as i64);
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, CONTEXT_LENGTH]), device);
        let eos = Tensor::<B, 1, Int>::from_data(TensorData::new(eos, [n]), device);
        let text = model.encode_text(ids);
        let logits = model
            .forward_encoded(latent.clone().repeat_dim(0, n), text, eos, false)
            .logits;
        let values = floats(logits);
        let plane = values.len() / n;
        masks.extend(
            values
                .chunks(plane)
                .map(|c| c.iter().map(|&l| l > 0.0).collect()),
        );
    }
    Ok(masks)
}

fn floats<B: SdBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}
