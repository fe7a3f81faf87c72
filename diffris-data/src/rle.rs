//! COCO run-length encoding (the `segmentation` of RRSIS-D's `instances.json`) and polygon
//! rasterisation, bit-compatible with pycocotools' `maskApi.c`.
//!
//! An RLE flattens an `h x w` mask column-major into alternating runs of 0s and 1s, starting
//! with 0s (possibly an empty run). The compressed string stores each run as a little-endian
//! varint of 5-bit groups (`+48` to make printable ASCII, `0x20` = more groups follow, `0x10` in
//! the last group = negative), and from the fourth run on stores the difference to the run two
//! places back.

/// A binary mask, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryMask {
    pub height: usize,
    pub width: usize,
    /// `height * width` values, row-major.
    pub data: Vec<bool>,
}

impl BinaryMask {
    /// An all-background mask.
    pub fn empty(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            data: vec![false; height * width],
        }
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }

    /// Pixel-wise OR with a mask of the same size.
    pub fn union_with(&mut self, other: &BinaryMask) {
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a |= b;
        }
    }
}

/// Why an RLE could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    #[error("invalid character {0:?} in compressed RLE counts")]
    BadChar(char),
    #[error("compressed RLE counts end in the middle of a number")]
    Truncated,
    #[error("RLE run {index} is negative ({value})")]
    NegativeRun { index: usize, value: i64 },
    #[error("RLE counts sum to {sum} but the mask has {h}x{w} = {} pixels", h * w)]
    WrongTotal { sum: u64, h: usize, w: usize },
    #[error("RLE counts sum past 2^64")]
    Overflow,
    #[error("polygon {index}: {reason}")]
    BadPolygon { index: usize, reason: String },
}

/// Decodes a compressed counts string into run lengths.
pub fn decode_counts(s: &str) -> Result<Vec<u64>, RleError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k, mut more) = (0i64, 0u32, true);
        while more {
            let &byte = bytes.get(p).ok_or(RleError::Truncated)?;
            if !(48..48 + 64).contains(&byte) {
                return Err(RleError::BadChar(byte as char));
            }
            let c = (byte - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more && c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        let m = counts.len();
        if m > 2 {
            x += counts[m - 2] as i64;
        }
        if x < 0 {
            return Err(RleError::NegativeRun { index: m, value: x });
        }
        counts.push(x as u64);
    }
    Ok(counts)
}

/// Encodes run lengths as a compressed counts string.
pub fn encode_counts(counts: &[u64]) -> String {
    let mut out = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = c as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        let mut more = true;
        while more {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            out.push((c + 48) as char);
        }
    }
    out
}

/// Expands run lengths into an `h x w` mask; the runs must cover exactly `h * w` pixels.
pub fn counts_to_mask(counts: &[u64], h: usize, w: usize) -> Result<BinaryMask, RleError> {
    // Checked: a sum that wrapped around could equal `h * w` and send the runs out of bounds.
    let sum = counts
        .iter()
        .try_fold(0u64, |a, &c| a.checked_add(c))
        .ok_or(RleError::Overflow)?;
    if sum != (h * w) as u64 {
        return Err(RleError::WrongTotal { sum, h, w });
    }
    let mut mask = BinaryMask::empty(h, w);
    let mut pos = 0usize;
    for (i, &run) in counts.iter().enumerate() {
        if i % 2 == 1 {
            for k in pos..pos + run as usize {
                // Column-major index k -> (row k % h, column k / h).
                mask.data[(k % h) * w + k / h] = true;
            }
        }
        pos += run as usize;
    }
    Ok(mask)
}

/// Run lengths of a mask (column-major, starting with a run of 0s).
pub fn mask_to_counts(mask: &BinaryMask) -> Vec<u64> {
    let (h, w) = (mask.height, mask.width);
    let mut counts = Vec::new();
    let mut current = false;
    let mut run = 0u64;
    for col in 0..w {
        for row in 0..h {
            let v = mask.data[row * w + col];
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// Rasterises one polygon `[x1, y1, x2, y2, ...]` as pycocotools' `rleFrPoly` does: the outline
/// is walked on a 5x finer grid, its crossings with pixel-centre columns become run boundaries.
pub fn polygon_counts(xy: &[f64], h: usize, w: usize) -> Vec<u64> {
    const SCALE: f64 = 5.0;
    let k = xy.len() / 2;
    if k == 0 {
        return vec![(h * w) as u64];
    }
    // Upsampled vertices, closed.
    let mut x: Vec<i64> = (0..k).map(|j| (SCALE * xy[2 * j] + 0.5) as i64).collect();
    let mut y: Vec<i64> = (0..k)
        .map(|j| (SCALE * xy[2 * j + 1] + 0.5) as i64)
        .collect();
    x.push(x[0]);
    y.push(y[0]);
    // Points along every edge (Bresenham-like, stepping along the longer axis).
    let (mut u, mut v) = (Vec::new(), Vec::new());
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx >= dy {
            let s = if dx == 0 {
                0.0
            } else {
                (ye - ys) as f64 / dx as f64
            };
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i64);
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i64);
            }
        }
    }
    // Where the outline crosses a pixel-centre column, downsampled to the pixel grid.
    let mut boundary: Vec<u64> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
        let xd = (xd + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > (w as f64 - 1.0) {
            continue;
        }
        let yd = if v[j] < v[j - 1] { v[j] } else { v[j - 1] } as f64;
        let yd = ((yd + 0.5) / SCALE - 0.5).clamp(0.0, h as f64).ceil();
        boundary.push(xd as u64 * h as u64 + yd as u64);
    }
    boundary.push((h * w) as u64);
    boundary.sort_unstable();
    // Boundary positions -> run lengths, merging the zero-length runs of repeated positions.
    let mut prev = 0u64;
    let diffs: Vec<u64> = boundary
        .iter()
        .map(|&t| {
            let d = t - prev;
            prev = t;
            d
        })
        .collect();
    let mut counts = vec![diffs[0]];
    let mut j = 1;
    while j < diffs.len() {
        if diffs[j] > 0 {
            counts.push(diffs[j]);
            j += 1;
        } else {
            j += 1;
            if j < diffs.len() {
                *counts.last_mut().expect("non-empty") += diffs[j];
                j += 1;
            }
        }
    }
    counts
}

/// The union of several polygons of one object, as a mask (pycocotools `frPyObjects` + `merge`).
///
/// Each polygon must hold pairs of finite coordinates within `MARGIN` image sizes of the image:
/// the rasteriser walks the outline point by point, so one coordinate of 4e8 would mean billions
/// of points (pycocotools takes them all; here it is an error).
pub fn polygons_to_mask(polygons: &[Vec<f64>], h: usize, w: usize) -> Result<BinaryMask, RleError> {
    const MARGIN: f64 = 4.0;
    let limit = MARGIN * h.max(w) as f64;
    let mut mask = BinaryMask::empty(h, w);
    for (index, poly) in polygons.iter().enumerate() {
        let bad = |reason: String| RleError::BadPolygon { index, reason };
        if poly.len() % 2 == 1 {
            return Err(bad(format!("{} coordinates, not x, y pairs", poly.len())));
        }
        if let Some(v) = poly.iter().find(|v| !v.is_finite() || v.abs() > limit) {
            return Err(bad(format!(
                "coordinate {v} is not within {MARGIN} image sizes of a {h}x{w} image"
            )));
        }
        mask.union_with(&counts_to_mask(&polygon_counts(poly, h, w), h, w)?);
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> BinaryMask {
        BinaryMask {
            height: rows.len(),
            width: rows[0].len(),
            data: rows
                .iter()
                .flat_map(|r| r.chars().map(|c| c == '1'))
                .collect(),
        }
    }

    #[test]
    fn counts_are_column_major_starting_with_zeros() {
        // Columns: [1,0], [1,1], [0,0] -> flattened 1 0 1 1 0 0 -> runs 0,1,1,2,2.
        let m = mask(&["110", "010"]);
        assert_eq!(mask_to_counts(&m), vec![0, 1, 1, 2, 2]);
        assert_eq!(counts_to_mask(&[0, 1, 1, 2, 2], 2, 3).unwrap(), m);
    }

    #[test]
    fn string_round_trip_by_hand() {
        // Runs [3, 2, 7]: no deltas (i <= 2); 3 -> '3', 2 -> '2', 7 -> '7'.
        assert_eq!(encode_counts(&[3, 2, 7]), "327");
        // Fourth run 1 stored as 1 - 2 = -1: low 5 bits 0x1f, sign bit set, no more -> 0x1f + 48 = 'O'.
        assert_eq!(encode_counts(&[3, 2, 7, 1]), "327O");
        assert_eq!(decode_counts("327O").unwrap(), vec![3, 2, 7, 1]);
        // 100 = 0b11_00100: first group 0x04 | 0x20 (more) = 36 -> 'T', second 0x03 -> '3'.
        assert_eq!(encode_counts(&[100]), "T3");
        assert_eq!(decode_counts("T3").unwrap(), vec![100]);
    }

    #[test]
    fn bad_rle_is_reported() {
        assert_eq!(decode_counts("3 2"), Err(RleError::BadChar(' ')));
        assert_eq!(decode_counts("T"), Err(RleError::Truncated));
        let err = counts_to_mask(&[3, 2], 2, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RLE counts sum to 5 but the mask has 2x3 = 6 pixels"
        );
    }

    #[test]
    fn axis_aligned_rectangle_polygon_covers_its_pixels() {
        // Rectangle with corners on pixel edges (1,1)-(3,2) in continuous coordinates covers the
        // pixels whose centres lie inside: columns 1..3, row 1.
        let m = polygons_to_mask(&[vec![1.0, 1.0, 3.0, 1.0, 3.0, 2.0, 1.0, 2.0]], 4, 5).unwrap();
        assert_eq!(m, mask(&["00000", "01100", "00000", "00000"]));
    }

    /// Crafted annotations are errors, not panics or unbounded allocations.
    #[test]
    fn hostile_counts_and_polygons_are_errors() {
        // Runs whose u64 sum wraps around to exactly 2x3 = 6.
        let wrap = [u64::MAX, 7];
        assert_eq!(counts_to_mask(&wrap, 2, 3), Err(RleError::Overflow));
        // (A 0x0 size decodes to an empty mask, as in pycocotools; a dataset record with that
        // size is refused where it is read, `Sample::load_mask`.)
        let far = polygons_to_mask(&[vec![0.0, 0.0, 4e8, 0.0, 4e8, 2.0]], 4, 5).unwrap_err();
        assert!(far.to_string().contains("coordinate 400000000"), "{far}");
        let odd = polygons_to_mask(&[vec![1.0, 1.0, 3.0, 1.0, 3.0]], 4, 5).unwrap_err();
        assert!(odd.to_string().contains("5 coordinates"), "{odd}");
        let nan = polygons_to_mask(&[vec![1.0, f64::NAN, 3.0, 1.0, 3.0, 2.0]], 4, 5);
        assert!(nan.is_err());
        // Just outside the image is still a polygon (pycocotools clips it).
        assert!(polygons_to_mask(&[vec![-1.0, -1.0, 6.0, -1.0, 6.0, 5.0]], 4, 5).is_ok());
    }
}
