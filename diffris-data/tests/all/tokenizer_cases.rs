//! The embedded CLIP tokenizer against ids recorded from open_clip
//! (`tools/make_tokenizer_cases.py` writes `fixtures/clip_tokenizer_cases.json`).

use diffris_data::ClipTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    sd_ids: Vec<u32>,
    eos_index: usize,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/clip_tokenizer_cases.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

#[test]
fn ids_equal_open_clip_for_every_recorded_sentence() {
    let tok = ClipTokenizer::embedded().unwrap();
    let cases = cases();
    assert!(cases.len() >= 10, "the fixture holds at least 10 sentences");
    for case in &cases {
        let got = tok.encode(&case.text).unwrap();
        assert_eq!(got.ids, case.sd_ids, "ids of {:?}", case.text);
        assert_eq!(
            got.eos_index, case.eos_index,
            "eos index of {:?}",
            case.text
        );
    }
}

#[test]
fn diffusers_vocab_files_give_the_same_ids() {
    // A user's `tokenizer/` folder holds the same two files the embedded asset compresses.
    let dir = tempfile::tempdir().unwrap();
    let tok_dir = dir.path().join("tokenizer");
    std::fs::create_dir(&tok_dir).unwrap();
    for (name, gz) in [
        (
            "vocab.json",
            &include_bytes!("../../assets/clip/vocab.json.gz")[..],
        ),
        (
            "merges.txt",
            &include_bytes!("../../assets/clip/merges.txt.gz")[..],
        ),
    ] {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        std::fs::write(tok_dir.join(name), text).unwrap();
    }
    let from_dir = ClipTokenizer::from_diffusers_dir(dir.path()).unwrap();
    let embedded = ClipTokenizer::embedded().unwrap();
    for case in cases() {
        assert_eq!(
            from_dir.encode(&case.text).unwrap(),
            embedded.encode(&case.text).unwrap()
        );
    }
}

#[test]
fn missing_vocab_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = ClipTokenizer::from_diffusers_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab.json"), "{err}");
}
