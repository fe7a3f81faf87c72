//! Data side of diffris: the CLIP tokenizer, the RRSIS dataset formats, the synthetic SynthRS
//! dataset, transforms and batching.

pub mod batch;
pub mod error;
pub mod formats;
pub mod inspect;
pub mod rle;
pub mod sample;
pub mod synth;
pub mod tokenizer;
pub mod transforms;

pub use error::{DataError, Result};
pub use formats::DatasetFormat;
pub use sample::{MaskSource, Sample};
pub use tokenizer::{ClipTokenizer, TokenizedText, Word};
