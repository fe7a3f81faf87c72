//! PNG files written whole or not at all: encoded in memory, then written through a temporary
//! file and a rename ([`write_atomic`]), so a full disk or a kill leaves no truncated image
//! under the final name.

use std::io::Cursor;
use std::path::Path;

use anyhow::Context;
use image::{DynamicImage, ImageFormat};

use crate::util::atomic_file::write_atomic;

/// Writes `image` to `path` as PNG (creating its folder).
pub fn save_png(path: &Path, image: impl Into<DynamicImage>) -> anyhow::Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    image
        .into()
        .write_to(&mut bytes, ImageFormat::Png)
        .with_context(|| format!("encoding {}", path.display()))?;
    write_atomic(path, bytes.get_ref())
}

/// An RGB canvas of `size` drawn by `draw` (plotters' bitmap backend on a buffer), saved to
/// `path` as PNG.
pub fn save_drawing(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&mut [u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut raw = vec![0u8; width as usize * height as usize * 3];
    draw(&mut raw)?;
    let canvas = image::RgbImage::from_raw(width, height, raw).expect("the buffer keeps its size");
    save_png(path, canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_png_reads_back_and_a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("m.png");
        let img = image::GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y) as u8]));
        save_png(&path, img.clone()).unwrap();
        assert_eq!(image::open(&path).unwrap().into_luma8(), img);
        assert!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count() == 1,
            "no temporary file stays"
        );
        // A folder where the file should go: the rename fails and nothing else is left.
        let blocked = dir.path().join("blocked.png");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        let err = save_png(&blocked, img).unwrap_err();
        assert!(format!("{err:#}").contains("blocked.png"), "{err:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
