//! The published dataset layouts: RRSIS-D, RefSegRS, RISBench, and SynthRS (written in the
//! RRSIS-D layout). Each module documents its layout on disk; this crate is the only place that
//! knows them.

pub mod captions;
pub mod phrase;
pub mod rrsisd;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::sample::{MaskSource, Sample};

/// A dataset layout on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// RRSIS-D (pickle + COCO JSON + JPEGs).
    Rrsisd,
    /// RefSegRS (TIFF pairs + phrase files).
    Refsegrs,
    /// RISBench (image/mask pairs + phrase files).
    Risbench,
    /// SynthRS, diffris' synthetic set, in the RRSIS-D layout.
    Synthrs,
}

impl DatasetFormat {
    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rrsisd => "rrsisd",
            Self::Refsegrs => "refsegrs",
            Self::Risbench => "risbench",
            Self::Synthrs => "synthrs",
        }
    }

    /// Reads the samples of one split.
    /// Every object annotated in each image of the dataset at `root` (referred to or not),
    /// undecoded and keyed by the image path its samples carry; `None` for formats that do not
    /// list every object of an image (RefSegRS, RISBench).
    pub fn scene_objects(self, root: &Path) -> Result<Option<HashMap<PathBuf, Vec<MaskSource>>>> {
        match self {
            Self::Rrsisd | Self::Synthrs => rrsisd::image_annotations(root).map(Some),
            Self::Refsegrs | Self::Risbench => Ok(None),
        }
    }

    /// The file that holds `split` alone, for formats with one file per split (RefSegRS,
    /// RISBench); `None` where one file holds every split (RRSIS-D's `refs(unc).p`).
    pub fn split_file(self, root: &Path, split: &str) -> Option<PathBuf> {
        match self {
            Self::Rrsisd | Self::Synthrs => None,
            Self::Refsegrs | Self::Risbench => Some(phrase::phrase_file(root, split)),
        }
    }

    pub fn read_split(self, root: &Path, split: &str) -> Result<Vec<Sample>> {
        match self {
            Self::Rrsisd | Self::Synthrs => rrsisd::read_split(root, split),
            Self::Refsegrs => phrase::read_split(phrase::REFSEGRS, root, split),
            Self::Risbench => phrase::read_split(phrase::RISBENCH, root, split),
        }
    }
}

impl std::str::FromStr for DatasetFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "rrsisd" => Ok(Self::Rrsisd),
            "refsegrs" => Ok(Self::Refsegrs),
            "risbench" => Ok(Self::Risbench),
            "synthrs" => Ok(Self::Synthrs),
            _ => Err(format!(
                "unknown dataset format `{s}` (rrsisd, refsegrs, risbench, synthrs)"
            )),
        }
    }
}
