//! One referring sample: (image, mask, sentence), with where each part comes from on disk.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{DataError, Result};
use crate::rle::{BinaryMask, counts_to_mask, decode_counts, polygons_to_mask};

/// One segmentation part of a COCO annotation.
#[derive(Clone, Debug, PartialEq)]
pub enum SegmentPart {
    /// Compressed RLE string.
    Compressed(String),
    /// Uncompressed run lengths.
    Counts(Vec<u64>),
    /// A polygon `[x1, y1, x2, y2, ...]`.
    Polygon(Vec<f64>),
}

/// Where a sample's mask comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSource {
    /// A COCO annotation: the union of its parts (RRSIS-D's reference decoder instead sums
    /// overlapping parts and keeps pixels equal to 1; the union is the documented choice here).
    Coco {
        height: usize,
        width: usize,
        parts: Vec<SegmentPart>,
    },
    /// A grayscale mask image; foreground where the value is above `threshold`.
    File { path: PathBuf, threshold: u8 },
}

/// One (image, mask, sentence) triplet.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Identifies the sample in messages and outputs (e.g. `ref 12 sent 34`, `line 7`).
    pub id: String,
    pub image: PathBuf,
    pub mask: MaskSource,
    pub sentence: String,
    /// Object category when the format records one.
    pub category: Option<String>,
    /// The file and record the sample was read from, for error messages.
    pub origin: PathBuf,
}

impl Sample {
    /// Decodes the ground-truth mask at its stored resolution.
    pub fn load_mask(&self) -> Result<BinaryMask> {
        match &self.mask {
            MaskSource::Coco {
                height,
                width,
                parts,
            } => {
                let (h, w) = (*height, *width);
                if h == 0 || w == 0 {
                    return Err(DataError::record(
                        &self.origin,
                        &self.id,
                        format!("the annotation's size is {h}x{w}: a mask needs pixels"),
                    ));
                }
                let mut mask = BinaryMask::empty(h, w);
                let mut polygons = Vec::new();
                for part in parts {
                    let counts = match part {
                        SegmentPart::Compressed(s) => decode_counts(s).map_err(|e| {
                            DataError::record(&self.origin, &self.id, e.to_string())
                        })?,
                        SegmentPart::Counts(c) => c.clone(),
                        SegmentPart::Polygon(p) => {
                            polygons.push(p.clone());
                            continue;
                        }
                    };
                    let m = counts_to_mask(&counts, h, w)
                        .map_err(|e| DataError::record(&self.origin, &self.id, e.to_string()))?;
                    mask.union_with(&m);
                }
                if !polygons.is_empty() {
                    mask.union_with(
                        &polygons_to_mask(&polygons, h, w).map_err(|e| {
                            DataError::record(&self.origin, &self.id, e.to_string())
                        })?,
                    );
                }
                Ok(mask)
            }
            MaskSource::File { path, threshold } => {
                let (h, w, values) = mask_values(path)?;
                Ok(BinaryMask {
                    height: h,
                    width: w,
                    data: values.iter().map(|&v| v > u32::from(*threshold)).collect(),
                })
            }
        }
    }

    /// Decodes the image as RGB at its stored resolution.
    pub fn load_image(&self) -> Result<RgbImage> {
        Ok(open_image(&self.image)?.into_rgb8())
    }

    /// The image and its mask, which must cover it pixel for pixel (else an error naming the
    /// sample, its annotation file and the image).
    pub fn load_image_and_mask(&self) -> Result<(RgbImage, BinaryMask)> {
        let mask = self.load_mask()?;
        let image = self.load_image()?;
        let (ih, iw) = (image.height() as usize, image.width() as usize);
        if (mask.height, mask.width) != (ih, iw) {
            return Err(DataError::record(
                &self.origin,
                &self.id,
                format!(
                    "its mask is {}x{} but its image {} is {ih}x{iw} (height x width): the mask \
                     must cover the image pixel for pixel",
                    mask.height,
                    mask.width,
                    self.image.display()
                ),
            ));
        }
        Ok((image, mask))
    }
}

/// A mask file's values at their stored bit depth, `(height, width, values)`: the gray level of
/// 8- and 16-bit grayscale images (with or without alpha), and of colour images whose three
/// channels agree. A 16-bit mask keeps its values (a 0/1 or 0/255 mask stored in 16 bits reads
/// as 0/1 or 0/255, where converting it to 8 bits would divide it by 257 and empty it); a colour
/// mask with differing channels is an error naming the file, since no gray level is its own.
pub fn mask_values(path: &Path) -> Result<(usize, usize, Vec<u32>)> {
    use image::DynamicImage as D;
    let img = open_image(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let values: Vec<u32> = match &img {
        D::ImageLuma8(g) => g.pixels().map(|p| u32::from(p.0[0])).collect(),
        D::ImageLumaA8(g) => g.pixels().map(|p| u32::from(p.0[0])).collect(),
        D::ImageLuma16(g) => g.pixels().map(|p| u32::from(p.0[0])).collect(),
        D::ImageLumaA16(g) => g.pixels().map(|p| u32::from(p.0[0])).collect(),
        D::ImageRgb8(_) | D::ImageRgba8(_) => {
            let rgb = img.to_rgb8();
            gray_levels(path, rgb.pixels().map(|p| p.0.map(u32::from)))?
        }
        D::ImageRgb16(_) | D::ImageRgba16(_) => {
            let rgb = img.to_rgb16();
            gray_levels(path, rgb.pixels().map(|p| p.0.map(u32::from)))?
        }
        other => {
            return Err(DataError::Image {
                path: path.to_path_buf(),
                message: format!("a {:?} image is not a mask", other.color()),
            });
        }
    };
    Ok((h, w, values))
}

/// The gray level of each pixel of a colour mask, or an error at the first coloured pixel.
fn gray_levels(path: &Path, pixels: impl Iterator<Item = [u32; 3]>) -> Result<Vec<u32>> {
    pixels
        .enumerate()
        .map(|(i, [r, g, b])| {
            if r == g && g == b {
                Ok(r)
            } else {
                Err(DataError::Image {
                    path: path.to_path_buf(),
                    message: format!(
                        "a colour mask (pixel {i} is ({r}, {g}, {b})); masks are gray levels"
                    ),
                })
            }
        })
        .collect()
}

/// Opens and decodes an image; a missing, corrupt or truncated file is an error naming it.
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_reaches_its_end(&bytes) {
        // The decoder fills a cut-off JPEG's missing rows with gray and reports nothing.
        return Err(DataError::Image {
            path: path.to_path_buf(),
            message: "the JPEG is truncated (its segments end before the end-of-image marker)"
                .into(),
        });
    }
    reader.decode().map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Whether a JPEG's structure runs whole to its end-of-image marker (`FF D9`): the segments after
/// the start marker are followed by their lengths, and each scan's entropy-coded data to the next
/// marker (`FF` then a byte other than `00` and the restart markers `D0`-`D7`). A cut-off file
/// runs out of bytes first. Markers inside a segment (a comment, an EXIF thumbnail) are skipped
/// with it, so they cannot pass for the end.
fn jpeg_reaches_its_end(bytes: &[u8]) -> bool {
    let mut pos = 2; // after FF D8
    loop {
        // A marker, after any fill bytes (FF FF ...).
        if bytes.get(pos) != Some(&0xFF) {
            return false;
        }
        while bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos + 1) else {
            return false;
        };
        pos += 2;
        match marker {
            0xD9 => return true,
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(pos..pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if len < 2 {
            return false;
        }
        pos += len;
        if marker == 0xDA {
            // Entropy-coded data up to the next marker.
            loop {
                match (bytes.get(pos), bytes.get(pos + 1)) {
                    (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => pos += 2,
                    (Some(0xFF), Some(_)) => break,
                    (Some(_), _) => pos += 1,
                    (None, _) => return false,
                }
            }
        }
    }
}
