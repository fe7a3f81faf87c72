//! A referring expression on an image of the user's (`segment`, `features`, `explain`), prepared
//! as the network reads it: the image resized to the input size and normalised, the text
//! tokenised by the frozen stack's tokenizer (which [`crate::inputs::frozen::load_frozen`]
//! checked against its text encoder).

use diffris_data::ClipTokenizer;
use diffris_data::batch::{RisItem, prepare_query};
use image::RgbImage;

/// `text` on `image` at the network input size `(height, width)`. A text longer than CLIP's 75
/// tokens is cut there, and a warning says so on stderr.
pub fn query_item(
    image: &RgbImage,
    text: &str,
    tokenizer: &ClipTokenizer,
    (height, width): (usize, usize),
) -> anyhow::Result<RisItem> {
    let item = prepare_query(image, text, tokenizer, height, width)?;
    if let Some(w) = item.truncation_warning(text) {
        eprintln!("{w}");
    }
    Ok(item)
}
