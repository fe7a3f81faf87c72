//! The phrase-file layouts of RefSegRS and RISBench:
//!
//! ```text
//! RefSegRS:  <root>/images/<id>.tif   <root>/masks/<id>.tif   (foreground: value > 50)
//! RISBench:  <root>/img_rgb/<file>    <root>/mask/<file>      (foreground: value > 0)
//! both:      <root>/output_phrase_{train,val,test}.txt, one "<id or file> <expression>" a line
//! ```
//!
//! A missing split file is an error only when that split is asked for (RISBench's public
//! download may lack `val`).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::sample::{MaskSource, Sample};

/// What differs between the two phrase-file formats.
#[derive(Clone, Copy, Debug)]
pub struct PhraseLayout {
    pub image_dir: &'static str,
    pub mask_dir: &'static str,
    /// Extension appended to the line's first word (RefSegRS names ids without one).
    pub extension: Option<&'static str>,
    /// Foreground is above this value.
    pub threshold: u8,
}

/// RefSegRS (Yuan et al.).
pub const REFSEGRS: PhraseLayout = PhraseLayout {
    image_dir: "images",
    mask_dir: "masks",
    extension: Some("tif"),
    threshold: 50,
};

/// RISBench (CroBIM).
pub const RISBENCH: PhraseLayout = PhraseLayout {
    image_dir: "img_rgb",
    mask_dir: "mask",
    extension: None,
    threshold: 0,
};

/// The phrase file of a split.
pub fn phrase_file(root: &Path, split: &str) -> PathBuf {
    root.join(format!("output_phrase_{split}.txt"))
}

/// Splits whose phrase file exists.
pub fn available_splits(root: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("output_phrase_")?
                    .strip_suffix(".txt")?
                    .to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Reads the samples of `split`, one per line, in file order.
pub fn read_split(layout: PhraseLayout, root: &Path, split: &str) -> Result<Vec<Sample>> {
    let file = phrase_file(root, split);
    if !file.is_file() {
        return Err(DataError::UnknownSplit {
            root: root.to_path_buf(),
            split: format!("{split} ({} is missing)", file.display()),
            available: available_splits(root).join(", "),
        });
    }
    let text = std::fs::read_to_string(&file).map_err(|e| DataError::io(&file, e))?;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let record = format!("line {}", i + 1);
        let (name, expression) = match line.split_once(char::is_whitespace) {
            Some((n, e)) if !e.trim().is_empty() => (n, e.trim()),
            _ => {
                return Err(DataError::record(
                    &file,
                    record,
                    "empty referring expression",
                ));
            }
        };
        let file_name = match layout.extension {
            Some(ext) if Path::new(name).extension().is_none() => format!("{name}.{ext}"),
            _ => name.to_string(),
        };
        samples.push(Sample {
            id: format!("{record} ({name})"),
            image: root.join(layout.image_dir).join(&file_name),
            mask: MaskSource::File {
                path: root.join(layout.mask_dir).join(&file_name),
                threshold: layout.threshold,
            },
            sentence: expression.to_string(),
            category: None,
            origin: file.clone(),
        });
    }
    Ok(samples)
}
