//! `diffris init-sd` + `diffris features` end to end through the binary.

use std::path::Path;
use std::process::Command;

use safetensors::SafeTensors;

fn diffris(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args(args)
        .output()
        .unwrap()
}

fn floats(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let v = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
    let data = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v.shape().to_vec(), data)
}

#[test]
fn features_of_one_image_and_expression() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("sd");
    let out = dir.path().join("f.safetensors");
    let o = diffris(&[
        "init-sd",
        "--arch",
        "tiny",
        "--seed",
        "1",
        "--out",
        sd.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let image = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../diffris-data/tests/fixtures/rrsisd/images/rrsisd/JPEGImages/00123.jpg");
    let o = diffris(&[
        "features",
        "--sd",
        sd.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--text",
        "the red roof building at the top left",
        "--size",
        "128",
        "--latent-scale",
        "0.18215",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("token_ids").unwrap();
    let ids: Vec<i64> = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        &ids[..10],
        &[49406, 518, 736, 6449, 2307, 536, 518, 1253, 1823, 49407]
    );
    assert_eq!(floats(&st, "clip.last_hidden_state").0, vec![1, 77, 32]);
    assert_eq!(floats(&st, "vae.latent_scaled").0, vec![1, 4, 16, 16]);
    // Taps of the tiny preset (16, 32, 32, 32 channels) at latent 16, finest first.
    for (k, shape) in [[1, 16, 16, 16], [1, 32, 8, 8], [1, 32, 4, 4], [1, 32, 2, 2]]
        .iter()
        .enumerate()
    {
        assert_eq!(&floats(&st, &format!("unet.tap.{k}")).0, shape);
    }
    // Head-averaged softmax rows sum to one over the 77 tokens, and so do their averages.
    let (shape, maps) = floats(&st, "unet.xattn.level1");
    assert_eq!(shape, vec![1, 77, 8, 8]);
    for pixel in 0..64 {
        let s: f32 = (0..77).map(|t| maps[t * 64 + pixel]).sum();
        assert!((s - 1.0).abs() < 1e-5, "pixel {pixel}: {s}");
    }
    // The latent is the posterior mean times the latent scale.
    let (_, mean) = floats(&st, "vae.posterior_mean");
    let (_, scaled) = floats(&st, "vae.latent_scaled");
    for (m, s) in mean.iter().zip(&scaled) {
        assert!((m * 0.18215 - s).abs() <= 1e-6 * m.abs().max(1.0));
    }
}

#[test]
fn single_file_without_arch_and_bad_size_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, b"not really").unwrap();
    let o = diffris(&[
        "features",
        "--sd",
        file.to_str().unwrap(),
        "--image",
        "x.png",
        "--text",
        "a",
        "--out",
        "o",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("architecture"), "{err}");
}
