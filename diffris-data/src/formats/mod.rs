//! The published dataset layouts (DATASETS.md): RRSIS-D, RefSegRS, RISBench, and SynthRS (written
//! in the RRSIS-D layout).

pub mod phrase;
pub mod rrsisd;

use std::path::Path;

use crate::error::Result;
use crate::sample::Sample;

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
