//! Image-caption folders for generative pre-training, in the layout diffusers' fine-tuning
//! scripts read (Hugging Face `ImageFolder` with metadata): a folder of images and a
//! `metadata.jsonl` beside them, one JSON object per line with the image's `file_name`
//! (relative to the folder) and its caption `text`; other keys are allowed and ignored.
//!
//! ```text
//! {"file_name": "tiles/0001.png", "text": "a harbour with three ships"}
//! ```
//!
//! Every line is checked when the folder is read: a line that is not a JSON object, lacks a key
//! or has one of the wrong type, a `file_name` that is absolute or climbs out of the folder
//! (`..`), or an image that does not exist is an error naming the file and line.

use std::path::{Component, Path, PathBuf};

use crate::error::{DataError, Result};

/// The metadata file's name.
pub const METADATA: &str = "metadata.jsonl";

/// One image and its caption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionedImage {
    /// The image file (the folder joined with its `file_name`).
    pub image: PathBuf,
    pub text: String,
}

/// Reads the pairs of the caption folder `root`, in the metadata's order.
pub fn read_captions(root: &Path) -> Result<Vec<CaptionedImage>> {
    let path = root.join(METADATA);
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut pairs = vec![];
    for (k, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = format!("line {}", k + 1);
        let bad = |message: String| DataError::record(&path, &record, message);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let field = |key: &str| -> Result<&str> {
            match object.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s),
                Some(other) => Err(bad(format!("`{key}` is {other}, not a string"))),
                None => Err(bad(format!("no `{key}`"))),
            }
        };
        let file_name = field("file_name")?;
        let caption = field("text")?;
        let relative = Path::new(file_name);
        let inside = !file_name.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(bad(format!(
                "`file_name` {file_name:?} must be a path inside {} (relative, without `..`)",
                root.display()
            )));
        }
        let image = root.join(relative);
        if !image.is_file() {
            return Err(bad(format!("{} does not exist", image.display())));
        }
        pairs.push(CaptionedImage {
            image,
            text: caption.to_string(),
        });
    }
    if pairs.is_empty() {
        return Err(DataError::format(&path, "holds no image"));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(lines: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tiles")).unwrap();
        for name in ["a.png", "tiles/b.png"] {
            std::fs::write(dir.path().join(name), b"image bytes").unwrap();
        }
        std::fs::write(dir.path().join(METADATA), lines).unwrap();
        dir
    }

    #[test]
    fn pairs_are_read_in_order_with_extra_keys_ignored() {
        let dir = folder(
            "{\"file_name\": \"a.png\", \"text\": \"two ships\"}\n\n\
             {\"file_name\": \"./tiles/b.png\", \"text\": \"a runway\", \"source\": \"x\"}\n",
        );
        let pairs = read_captions(dir.path()).unwrap();
        assert_eq!(
            pairs,
            [
                CaptionedImage {
                    image: dir.path().join("a.png"),
                    text: "two ships".into()
                },
                CaptionedImage {
                    image: dir.path().join("./tiles/b.png"),
                    text: "a runway".into()
                },
            ]
        );
    }

    #[test]
    fn every_bad_line_is_an_error_naming_the_file_and_line() {
        let cases = [
            ("not json", "line 1: not JSON"),
            ("[1, 2]", "line 1: not a JSON object"),
            ("{\"text\": \"x\"}", "line 1: no `file_name`"),
            (
                "{\"file_name\": \"a.png\", \"text\": 3}",
                "line 1: `text` is 3, not a string",
            ),
            (
                "{\"file_name\": \"../a.png\", \"text\": \"x\"}",
                "must be a path inside",
            ),
            (
                "{\"file_name\": \"/etc/passwd\", \"text\": \"x\"}",
                "must be a path inside",
            ),
            (
                "{\"file_name\": \"c.png\", \"text\": \"x\"}",
                "c.png does not exist",
            ),
            ("", "holds no image"),
        ];
        for (line, expected) in cases {
            let dir = folder(&format!(
                "{{\"file_name\": \"a.png\", \"text\": \"ok\"}}\n{line}"
            ));
            let err = read_captions(dir.path());
            let err = match (line.is_empty(), err) {
                // An empty second line leaves one good pair; check the empty file instead.
                (true, Ok(_)) => {
                    std::fs::write(dir.path().join(METADATA), "\n").unwrap();
                    read_captions(dir.path()).unwrap_err().to_string()
                }
                (_, Err(e)) => e.to_string(),
                (_, Ok(p)) => panic!("{line:?} was read: {p:?}"),
            };
            assert!(err.contains(METADATA), "{err}");
            let expected = expected.replace("line 1", "line 2");
            assert!(err.contains(&expected), "{line:?}: {err}");
        }
    }
}
