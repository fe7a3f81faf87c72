//! The integration tests of diffris-data, one module per subject, in one binary (one link of
//! the crate and its dependencies instead of one per file).

mod pickle;

mod bad_input;
mod formats;
mod mask_depth;
mod rle_cases;
mod scene_objects;
mod synthrs;
mod tokenizer_cases;
