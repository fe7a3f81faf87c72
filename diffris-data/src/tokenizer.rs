//! CLIP BPE tokenizer as Stable Diffusion 1.x uses it (open_clip's `SimpleTokenizer`, SD padding).
//!
//! Text is cleaned (HTML entities unescaped, curly quotes straightened, whitespace collapsed),
//! NFC-normalised and lowercased, split with CLIP's word pattern, byte-level encoded and merged
//! with the BPE rules. The 77 ids are `<|startoftext|>`, at most 75 text ids, `<|endoftext|>`,
//! then `<|endoftext|>` padding (SD-1.x pads with the end token; open_clip and SD-2 pad with 0).
//!
//! Difference from open_clip: open_clip runs `ftfy.fix_text`, a large set of heuristics. The parts
//! that occur in referring expressions are reproduced here: HTML entities, curly quotes (ftfy's
//! `uncurl_quotes`), and UTF-8 text that was decoded as Latin-1/Windows-1252 (`cafÃ©` ->
//! `café`), repaired only when re-encoding gives valid UTF-8.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Lowercase, NFC, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use crate::error::{DataError, Result};

/// Number of token positions the SD-1.x text encoder reads.
pub const CONTEXT_LENGTH: usize = 77;
/// Id of `<|startoftext|>` in the CLIP vocabulary.
pub const START_OF_TEXT: u32 = 49406;
/// Id of `<|endoftext|>`; also the padding id of SD-1.x.
pub const END_OF_TEXT: u32 = 49407;
/// Size of the CLIP BPE vocabulary.
pub const VOCAB_SIZE: usize = 49408;

/// CLIP's word pattern: special tokens, English contractions, letter runs, single digits, and
/// runs of other non-space symbols.
const WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

const EMBEDDED_VOCAB: &[u8] = include_bytes!("../assets/clip/vocab.json.gz");
const EMBEDDED_MERGES: &[u8] = include_bytes!("../assets/clip/merges.txt.gz");

/// One tokenised expression, laid out as the SD-1.x text encoder expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    /// Exactly [`CONTEXT_LENGTH`] ids.
    pub ids: Vec<u32>,
    /// Position of the first `<|endoftext|>` (the sentence token of CLIP).
    pub eos_index: usize,
    /// Whether text ids were dropped to fit the context.
    pub truncated: bool,
}

impl TokenizedText {
    /// Validity mask: `true` for the start token, the text and the first end token.
    pub fn mask(&self) -> Vec<bool> {
        (0..CONTEXT_LENGTH).map(|i| i <= self.eos_index).collect()
    }
}

/// The CLIP BPE tokenizer.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    source: String,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("source", &self.source)
            .finish()
    }
}

impl ClipTokenizer {
    /// The vocabulary shipped with diffris (open_clip's `bpe_simple_vocab_16e6`, MIT licence).
    pub fn embedded() -> Result<Self> {
        static CACHE: OnceLock<std::result::Result<ClipTokenizer, String>> = OnceLock::new();
        CACHE
            .get_or_init(|| {
                let vocab = gunzip(EMBEDDED_VOCAB).map_err(|e| e.to_string())?;
                let merges = gunzip(EMBEDDED_MERGES).map_err(|e| e.to_string())?;
                Self::from_texts(&vocab, &merges, "embedded CLIP vocabulary")
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|message| DataError::Tokenizer {
                source_name: "embedded CLIP vocabulary".into(),
                message,
            })
    }

    /// Loads `vocab.json` and `merges.txt` (the files of a diffusers `tokenizer/` folder).
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<Self> {
        let vocab =
            std::fs::read_to_string(vocab_json).map_err(|e| DataError::io(vocab_json, e))?;
        let merges =
            std::fs::read_to_string(merges_txt).map_err(|e| DataError::io(merges_txt, e))?;
        let name = vocab_json
            .parent()
            .unwrap_or(vocab_json)
            .display()
            .to_string();
        Self::from_texts(&vocab, &merges, &name)
    }

    /// Loads the tokenizer of a diffusers model folder (`<dir>/tokenizer/{vocab.json,merges.txt}`).
    pub fn from_diffusers_dir(dir: &Path) -> Result<Self> {
        let tok = dir.join("tokenizer");
        Self::from_files(&tok.join("vocab.json"), &tok.join("merges.txt"))
    }

    /// Builds the tokenizer from the text of `vocab.json` and `merges.txt`.
    pub fn from_texts(vocab_json: &str, merges_txt: &str, source: &str) -> Result<Self> {
        let err = |message: String| DataError::Tokenizer {
            source_name: source.to_string(),
            message,
        };
        let vocab: HashMap<String, u32> =
            serde_json::from_str(vocab_json).map_err(|e| err(format!("vocab.json: {e}")))?;
        for (name, id) in [
            ("<|startoftext|>", START_OF_TEXT),
            ("<|endoftext|>", END_OF_TEXT),
        ] {
            if vocab.get(name) != Some(&id) {
                return Err(err(format!(
                    "vocab.json: {name} must have id {id}, found {:?}",
                    vocab.get(name)
                )));
            }
        }
        let merges = parse_merges(merges_txt).map_err(err)?;
        let vocab: Vocab = vocab.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token("<|endoftext|>".into())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NormalizerSequence::new(vec![
                NFC.into(),
                Lowercase.into(),
            ])))
            .map_err(|e| err(e.to_string()))?;
        let split = Split::new(
            SplitPattern::Regex(WORD_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| err(e.to_string()))?;
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])));
        Ok(Self {
            inner,
            source: source.to_string(),
        })
    }

    /// Where the vocabulary came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// One more than the largest id the tokenizer can produce (special tokens included): a
    /// text encoder needs at least this many embeddings.
    pub fn id_count(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    }

    /// `text` cleaned ([`clean_text`]) and its BPE encoding without start/end tokens.
    fn encoding(&self, text: &str) -> Result<(String, tokenizers::Encoding)> {
        let cleaned = clean_text(text);
        let encoding =
            self.inner
                .encode(cleaned.as_str(), false)
                .map_err(|e| DataError::Tokenizer {
                    source_name: self.source.clone(),
                    message: format!("cannot encode {text:?}: {e}"),
                })?;
        Ok((cleaned, encoding))
    }

    /// BPE ids of `text` without start/end tokens.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encoding(text)?.1.get_ids().to_vec())
    }

    /// The 77 ids of `text`: start token, at most 75 text ids, end token, end-token padding.
    pub fn encode(&self, text: &str) -> Result<TokenizedText> {
        let raw = self.encode_raw(text)?;
        let room = CONTEXT_LENGTH - 2;
        let truncated = raw.len() > room;
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(START_OF_TEXT);
        ids.extend(raw.iter().take(room));
        let eos_index = ids.len();
        ids.resize(CONTEXT_LENGTH, END_OF_TEXT);
        Ok(TokenizedText {
            ids,
            eos_index,
            truncated,
        })
    }
}

/// One word of an expression as the text encoder reads it: a match of CLIP's word pattern in
/// the cleaned text (a letter run, a digit, a run of punctuation, a contraction) and the BPE
/// tokens it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word as it stands in the cleaned text ([`clean_text`]; case kept).
    pub text: String,
    /// Its token positions in the 77-token layout (the start token is position 0, so a first
    /// word starts at 1). A word cut by truncation keeps the positions that fit.
    pub tokens: std::ops::Range<usize>,
    /// Its byte range in the cleaned text.
    pub span: std::ops::Range<usize>,
}

impl ClipTokenizer {
    /// The words of `text` with the token positions [`ClipTokenizer::encode`] gives them
    /// (sub-word tokens grouped back into their word); words that truncation dropped entirely
    /// are left out.
    pub fn words(&self, text: &str) -> Result<Vec<Word>> {
        let (cleaned, encoding) = self.encoding(text)?;
        let room = CONTEXT_LENGTH - 2;
        let mut words: Vec<Word> = Vec::new();
        let mut current: Option<u32> = None;
        for (i, (word, &(start, end))) in encoding
            .get_word_ids()
            .iter()
            .zip(encoding.get_offsets())
            .enumerate()
            .take(room)
        {
            let position = i + 1;
            match (word, words.last_mut()) {
                (Some(w), Some(last)) if current == Some(*w) => {
                    last.tokens.end = position + 1;
                    last.span.end = last.span.end.max(end);
                }
                _ => {
                    current = *word;
                    words.push(Word {
                        text: String::new(),
                        tokens: position..position + 1,
                        span: start..end,
                    });
                }
            }
        }
        for w in &mut words {
            w.text = cleaned.get(w.span.clone()).unwrap_or_default().to_string();
        }
        Ok(words)
    }
}

/// `text` cleaned, with the byte range `span` of the cleaned text taken out (and the spaces
/// around it collapsed): the expression without one of its [`Word`]s.
pub fn without_span(text: &str, span: std::ops::Range<usize>) -> String {
    let cleaned = clean_text(text);
    let (before, after) = (
        cleaned.get(..span.start).unwrap_or(&cleaned),
        cleaned.get(span.end..).unwrap_or_default(),
    );
    clean_text(&format!("{before} {after}"))
}

fn gunzip(bytes: &[u8]) -> std::io::Result<String> {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut out)?;
    Ok(out)
}

/// Parses `merges.txt`: an optional `#version` header, then one `left right` pair a line.
fn parse_merges(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(format!(
                    "merges.txt line {}: expected two symbols, got {line:?}",
                    i + 1
                ));
            }
        }
    }
    Ok(merges)
}

/// open_clip's `basic_clean` + `whitespace_clean`, minus ftfy's mojibake repair.
pub fn clean_text(text: &str) -> String {
    let repaired = repair_mojibake(text);
    let unescaped = unescape_html(&unescape_html(&repaired));
    let straightened: String = unescaped
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            c => c,
        })
        .collect();
    straightened
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Windows-1252's characters for the bytes 0x80-0x9F (`None`: unassigned).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// Undoes UTF-8 that was decoded as Windows-1252/Latin-1: when every character maps back to
/// one byte and those bytes are valid UTF-8 containing multi-byte sequences, the decoded text
/// is returned; otherwise the text is left alone (so real Latin-1 text like `café` stays).
fn repair_mojibake(text: &str) -> std::borrow::Cow<'_, str> {
    if text.is_ascii() {
        return text.into();
    }
    let bytes: Option<Vec<u8>> = text
        .chars()
        .map(|c| match c as u32 {
            0x00..=0x7F | 0xA0..=0xFF => Some(c as u32 as u8),
            _ => CP1252_HIGH
                .iter()
                .position(|&h| h == Some(c))
                .map(|i| 0x80 + i as u8),
        })
        .collect();
    match bytes.map(String::from_utf8) {
        Some(Ok(fixed)) if !fixed.is_ascii() => fixed.into(),
        _ => text.into(),
    }
}

/// Replaces the HTML character references that occur in text: numeric ones and the common
/// named ones. Unknown references are left as they are (as Python's `html.unescape` does).
fn unescape_html(text: &str) -> String {
    const NAMED: [(&str, char); 6] = [
        ("amp", '&'),
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("nbsp", '\u{a0}'),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest[1..].find(';').map(|e| e + 1).filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let body = &rest[1..e];
            let ch = if let Some(num) = body.strip_prefix('#') {
                let value = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse::<u32>().ok(),
                };
                value.and_then(char::from_u32)
            } else {
                NAMED.iter().find(|(n, _)| *n == body).map(|(_, c)| *c)
            };
            ch.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sentence_matches_open_clip() {
        // Ids recorded from open_clip 3.3.0 (see tools/make_tokenizer_cases.py).
        let tok = ClipTokenizer::embedded().unwrap();
        let t = tok.encode("the red roof building at the top left").unwrap();
        assert_eq!(
            &t.ids[..10],
            &[49406, 518, 736, 6449, 2307, 536, 518, 1253, 1823, 49407]
        );
        assert_eq!(t.eos_index, 9);
        assert!(t.ids[9..].iter().all(|&id| id == END_OF_TEXT));
        assert_eq!(t.mask().iter().filter(|&&m| m).count(), 10);
    }

    #[test]
    fn words_group_sub_word_tokens_and_name_their_positions() {
        let tok = ClipTokenizer::embedded().unwrap();
        // "storagetanks" is one letter run that BPE splits into several tokens; "," and "2"
        // are words of their own (punctuation run, single digit).
        let text = "The  storagetanks, 2 of them";
        let t = tok.encode(text).unwrap();
        let words = tok.words(text).unwrap();
        let names: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(names, ["The", "storagetanks", ",", "2", "of", "them"]);
        // The positions tile the text tokens, from 1 to the end token.
        assert_eq!(words[0].tokens.start, 1);
        assert_eq!(words.last().unwrap().tokens.end, t.eos_index);
        for pair in words.windows(2) {
            assert_eq!(pair[0].tokens.end, pair[1].tokens.start);
        }
        assert!(words[1].tokens.len() > 1, "{:?}", words[1]);
        // Each word alone encodes to the ids at its positions.
        for w in &words {
            assert_eq!(
                tok.encode_raw(&w.text).unwrap(),
                t.ids[w.tokens.clone()].to_vec(),
                "{w:?}"
            );
        }
        assert_eq!(without_span(text, words[1].span.clone()), "The , 2 of them");
        assert_eq!(
            without_span(text, words[0].span.clone()),
            "storagetanks, 2 of them"
        );
        // Truncation: the words that fit, the last one cut at the context's end.
        let long = "tank ".repeat(100);
        let words = tok.words(&long).unwrap();
        assert_eq!(words.len(), CONTEXT_LENGTH - 2);
        assert_eq!(words.last().unwrap().tokens, 75..76);
        assert!(tok.words("").unwrap().is_empty());
    }

    #[test]
    fn long_text_keeps_end_token_last() {
        let tok = ClipTokenizer::embedded().unwrap();
        let text = "tank ".repeat(200);
        let t = tok.encode(&text).unwrap();
        assert_eq!(t.ids.len(), CONTEXT_LENGTH);
        assert!(t.truncated);
        assert_eq!(t.eos_index, CONTEXT_LENGTH - 1);
        assert_eq!(t.ids[CONTEXT_LENGTH - 1], END_OF_TEXT);
        assert_eq!(t.ids[0], START_OF_TEXT);
    }

    #[test]
    fn empty_text_is_start_then_end() {
        let tok = ClipTokenizer::embedded().unwrap();
        let t = tok.encode("   ").unwrap();
        assert_eq!(t.eos_index, 1);
        assert_eq!(t.ids[0], START_OF_TEXT);
        assert!(t.ids[1..].iter().all(|&id| id == END_OF_TEXT));
    }

    #[test]
    fn cleaning_unescapes_and_straightens() {
        assert_eq!(clean_text("a &amp;amp; b"), "a & b");
        assert_eq!(clean_text("the ship\u{2019}s  bow\n"), "the ship's bow");
        assert_eq!(clean_text("&#65;&#x42;&unknown; &"), "AB&unknown; &");
        assert_eq!(clean_text("cafÃ© roof"), "café roof");
        assert_eq!(clean_text("the shipâ€™s bow"), "the ship's bow");
        assert_eq!(clean_text("café"), "café");
    }

    #[test]
    fn bad_merges_line_is_named() {
        let err = parse_merges("#version: 0.2\na b\nabc\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }
}
