use super::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tfevents/events.out.tfevents.fixture"
);
const READ_BACK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tfevents/read_by_tensorboard.json"
);

/// The fixture's events: a file version, a loss at step 5 that a resume at step 3 then
/// withdraws, and scalars of the tags a run writes (one negative, one at a large step).
fn fixture_bytes() -> Vec<u8> {
    let mut out = record(&file_version_event(1_700_000_000.5));
    out.extend(record(&scalar_event(
        1_700_000_000.75,
        5,
        "train/loss",
        9.0,
    )));
    out.extend(record(&session_start_event(1_700_000_001.25, 3)));
    for (i, (tag, step, value)) in [
        ("train/loss", 3, 0.75f32),
        ("train/lr", 3, 1e-3),
        ("epoch/val_miou", 4, 31.42),
        ("train/loss", 300_000, -2.5),
    ]
    .into_iter()
    .enumerate()
    {
        out.extend(record(&scalar_event(
            1_700_000_002.0 + i as f64,
            step,
            tag,
            value,
        )));
    }
    out
}

/// Check values of CRC-32C: RFC 3720's (iSCSI) test patterns.
#[test]
fn crc32c_of_known_inputs() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
}

/// A protobuf varint by hand: 300 is `0xAC 0x02`; and the framing's lengths.
#[test]
fn scalar_event_layout_by_hand() {
    let e = scalar_event(0.0, 300, "a", 1.0);
    // wall_time: tag 0x09 + 8 bytes; step: tag 0x10 + varint 300.
    assert_eq!(&e[..9], &[0x09, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&e[9..12], &[0x10, 0xAC, 0x02]);
    // summary (field 5, 2 bytes of length 10) { value (field 1, 8 bytes) { tag "a", float 1.0 } }.
    assert_eq!(
        &e[12..],
        &[0x2A, 10, 0x0A, 8, 0x0A, 1, b'a', 0x15, 0, 0, 0x80, 0x3F]
    );
    let r = record(&e);
    assert_eq!(r.len(), e.len() + 16);
    assert_eq!(
        u64::from_le_bytes(r[..8].try_into().unwrap()),
        e.len() as u64
    );
}

/// The committed event file is what this writer produces; TensorBoard's reader
/// (`tools/read_tfevents.py`, output committed beside it) read from it exactly the scalars and
/// the resume written.
#[test]
fn tensorboard_reads_what_this_writer_writes() {
    let committed = std::fs::read(FIXTURE).unwrap();
    assert_eq!(committed, fixture_bytes(), "the writer's bytes changed");
    let read: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(READ_BACK).unwrap()).unwrap();
    let events = read["events"].as_array().unwrap();
    assert_eq!(events.len(), 7, "{read}");
    assert_eq!(events[0]["file_version"], "brain.Event:2");
    assert_eq!(
        (events[1]["step"].as_i64(), events[1]["value"].as_f64()),
        (Some(5), Some(9.0))
    );
    assert_eq!(events[2]["session_start_step"], 3);
    let scalars: Vec<(String, i64, f64, f64)> = events[3..]
        .iter()
        .map(|e| {
            (
                e["tag"].as_str().unwrap().to_string(),
                e["step"].as_i64().unwrap(),
                e["value"].as_f64().unwrap(),
                e["wall_time"].as_f64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("train/loss", 3, 0.75f32),
        ("train/lr", 3, 1e-3),
        ("epoch/val_miou", 4, 31.42),
        ("train/loss", 300_000, -2.5),
    ];
    for (i, ((tag, step, value, wall), (t, s, v))) in scalars.iter().zip(want).enumerate() {
        assert_eq!((tag.as_str(), *step), (t, s));
        // TensorBoard reads the f32 the file holds, widened to f64.
        assert_eq!(*value, v as f64, "{tag}");
        assert_eq!(*wall, 1_700_000_002.0 + i as f64);
    }
    // TensorBoard's scalar accumulator applies the resume: the loss at step 5, written before
    // the START at step 3, is gone; the four after it are there.
    assert_eq!(
        read["accumulator"]["train/loss"],
        serde_json::json!([[3, 0.75], [300000, -2.5]])
    );
    assert_eq!(read["accumulator"]["epoch/val_miou"][0][0], 4);
}

/// A resumed process's file drops the JSON lines at and after its first step and starts with
/// the purge; the earlier lines and both processes' event files stay.
#[test]
fn a_resumed_process_drops_the_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let line = |step| Scalar {
        wall_time: 1.0,
        step,
        tag: "train/loss".into(),
        value: step as f64,
    };
    let mut first = EventFile::create(dir.path(), 0, 10.0).unwrap();
    first.write(&[line(1), line(2), line(3)]).unwrap();
    let first_path = first.path().to_path_buf();
    drop(first);
    let mut second = EventFile::create(dir.path(), 2, 11.0).unwrap();
    second.write(&[line(2)]).unwrap();
    let jsonl = std::fs::read_to_string(dir.path().join(SCALARS_JSONL)).unwrap();
    let steps: Vec<i64> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2]);
    let second_bytes = std::fs::read(second.path()).unwrap();
    let head = [
        record(&file_version_event(11.0)),
        record(&session_start_event(11.0, 2)),
    ]
    .concat();
    assert!(second_bytes.starts_with(&head));
    assert!(first_path.is_file() && first_path != second.path());
}

/// Writes the fixture (run by hand with `--ignored` when the format changes, then
/// `tools/read_tfevents.py` on it).
#[test]
#[ignore]
fn write_fixture() {
    std::fs::write(FIXTURE, fixture_bytes()).unwrap();
}
