//! Resizing of masks and images to the network size (`docs/DESIGN.md`, section 5).

/// Nearest-neighbour resize of a row-major `h x w` plane, with the source index
/// `floor((i + 0.5) * in / out)` (PyTorch's `nearest-exact`, PIL's `NEAREST`).
///
/// # Shapes
/// `src`: `h * w`; returns `out_h * out_w`.
pub fn resize_nearest<T: Copy>(
    src: &[T],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<T> {
    assert_eq!(src.len(), h * w, "plane of {h}x{w} expected");
    let rows: Vec<usize> = (0..out_h).map(|i| nearest_index(i, h, out_h)).collect();
    let cols: Vec<usize> = (0..out_w).map(|j| nearest_index(j, w, out_w)).collect();
    let mut out = Vec::with_capacity(out_h * out_w);
    for &r in &rows {
        out.extend(cols.iter().map(|&c| src[r * w + c]));
    }
    out
}

fn nearest_index(i: usize, len_in: usize, len_out: usize) -> usize {
    // floor((i + 0.5) * in / out) in integers: floor((2i + 1) * in / (2 out)).
    (((2 * i + 1) * len_in) / (2 * len_out)).min(len_in - 1)
}

/// Bilinear resize of a row-major `h x w` float plane with half-pixel centres and no
/// anti-aliasing (PyTorch's `interpolate(mode="bilinear", align_corners=False)`).
///
/// # Shapes
/// `src`: `h * w`; returns `out_h * out_w`.
pub fn resize_bilinear(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    assert_eq!(src.len(), h * w, "plane of {h}x{w} expected");
    let taps = |len_in: usize, len_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = len_in as f64 / len_out as f64;
        (0..len_out)
            .map(|i| {
                let x = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (x.floor() as usize).min(len_in - 1);
                let i1 = (i0 + 1).min(len_in - 1);
                (i0, i1, (x - i0 as f64) as f32)
            })
            .collect()
    };
    let ys = taps(h, out_h);
    let xs = taps(w, out_w);
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The network input of an RGB image: resized to `height x width` with a triangle (bilinear)
/// filter that widens when downsampling (PIL's anti-aliased `BILINEAR`, as the LAVT/RMSIN
/// transforms use), scaled to [-1, 1] (`x / 127.5 - 1`), channels first.
///
/// # Shapes
/// returns `3 * height * width`, `[C, H, W]` row-major.
pub fn image_to_input(img: &image::RgbImage, height: usize, width: usize) -> Vec<f32> {
    let resized = if img.dimensions() == (width as u32, height as u32) {
        img.clone()
    } else {
        image::imageops::resize(
            img,
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    let plane = height * width;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in resized.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p.0[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_downsample_picks_centres() {
        // 4 -> 2: centres of output pixels 0 and 1 fall on source pixels 1 and 3.
        let src: Vec<u8> = (0..16).collect();
        assert_eq!(resize_nearest(&src, 4, 4, 2, 2), vec![5, 7, 13, 15]);
    }

    #[test]
    fn nearest_upsample_repeats() {
        assert_eq!(resize_nearest(&[1u8, 2], 1, 2, 1, 4), vec![1, 1, 2, 2]);
        // 3 -> 2: floor(0.5*3/2)=0, floor(1.5*3/2)=2.
        assert_eq!(resize_nearest(&[1u8, 2, 3], 1, 3, 1, 2), vec![1, 3]);
    }

    #[test]
    fn bilinear_matches_hand_computed_upsample() {
        // 1x2 -> 1x4 with half-pixel centres: x = -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped).
        let out = resize_bilinear(&[0.0, 1.0], 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        let same = resize_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 2, 2);
        assert_eq!(same, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
