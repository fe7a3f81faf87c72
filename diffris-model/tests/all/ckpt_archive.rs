//! Strict reading of PyTorch zip archives (`.ckpt`): damaged copies of the fixture's
//! `ldm/model.ckpt` (a storage entry removed, one cut short, one byte of one flipped) are errors
//! naming the entry and its tensor, never zero-filled weights; the intact file loads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::common::{diffusers_arch, fixtures};
use burn::backend::Flex;
use diffris_model::sd::StableDiffusion;
use diffris_model::weights::archive::{check, storage_refs};
use zip::write::SimpleFileOptions;

type B = Flex;

fn ckpt() -> PathBuf {
    fixtures().join("ldm/model.ckpt")
}

/// The first storage the pickle references, with its entry name.
fn first_storage() -> (String, String) {
    let file = std::fs::File::open(ckpt()).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let mut pickle = vec![];
    zip.by_name("model/data.pkl")
        .unwrap()
        .read_to_end(&mut pickle)
        .unwrap();
    let refs = storage_refs(&pickle).unwrap();
    let s = &refs[0];
    (format!("model/data/{}", s.key), s.tensors[0].clone())
}

/// A copy of the fixture archive with `entry` rewritten by `edit` (`None` drops it).
fn rewritten(dir: &Path, entry: &str, edit: impl Fn(Vec<u8>) -> Option<Vec<u8>>) -> PathBuf {
    let file = std::fs::File::open(ckpt()).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let out = dir.join("model.ckpt");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        let name = e.name().to_string();
        let mut bytes = vec![];
        e.read_to_end(&mut bytes).unwrap();
        let bytes = if name == entry {
            edit(bytes)
        } else {
            Some(bytes)
        };
        if let Some(b) = bytes {
            w.start_file(name, stored).unwrap();
            w.write_all(&b).unwrap();
        }
    }
    w.finish().unwrap();
    out
}

fn load_error(path: &Path) -> String {
    let arch = diffusers_arch();
    match StableDiffusion::<B>::load(path, Some(&arch), &Default::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_fixture_archive_passes_and_names_its_tensors() {
    check(&ckpt()).unwrap();
    let (entry, tensor) = first_storage();
    assert!(entry.starts_with("model/data/"), "{entry}");
    // The LDM state dict sits under `state_dict`, keys as LDM writes them.
    assert!(tensor.starts_with("state_dict."), "{tensor}");
    // A rewrite that changes nothing still loads (the harness itself is sound).
    let dir = tempfile::tempdir().unwrap();
    let same = rewritten(dir.path(), &entry, Some);
    check(&same).unwrap();
    StableDiffusion::<B>::load(&same, Some(&diffusers_arch()), &Default::default()).unwrap();
}

#[test]
fn a_missing_storage_entry_is_an_error_naming_it_and_its_tensor() {
    let (entry, tensor) = first_storage();
    let dir = tempfile::tempdir().unwrap();
    let err = load_error(&rewritten(dir.path(), &entry, |_| None));
    assert!(err.contains(&entry) && err.contains("missing"), "{err}");
    assert!(err.contains(&tensor), "{err}");
}

#[test]
fn a_short_storage_entry_is_an_error_with_both_sizes() {
    let (entry, tensor) = first_storage();
    let dir = tempfile::tempdir().unwrap();
    let err = load_error(&rewritten(dir.path(), &entry, |mut b| {
        b.truncate(b.len() - 2);
        Some(b)
    }));
    assert!(err.contains(&entry) && err.contains(&tensor), "{err}");
    assert!(err.contains("bytes") && err.contains("need"), "{err}");
}

#[test]
fn a_flipped_byte_fails_the_crc() {
    let (entry, _) = first_storage();
    // Flip one byte of the entry's data in place (the archive stores entries uncompressed).
    let file = std::fs::File::open(ckpt()).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let start = zip.by_name(&entry).unwrap().data_start().unwrap() as usize;
    let mut bytes = std::fs::read(ckpt()).unwrap();
    bytes[start] ^= 0x40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.ckpt");
    std::fs::write(&path, bytes).unwrap();
    let err = load_error(&path);
    assert!(err.contains(&entry) && err.contains("damaged"), "{err}");
}

#[test]
fn pickle_scanner_refuses_truncated_and_unknown_input() {
    assert!(
        storage_refs(b"\x80\x02}q\x00(X\x01").is_err(),
        "cut inside an opcode"
    );
    let err = storage_refs(b"\x80\x02\xff").unwrap_err();
    assert!(err.contains("0xff"), "{err}");
    // An empty dict: no storages.
    assert!(storage_refs(b"\x80\x02}q\x00.").unwrap().is_empty());
}
