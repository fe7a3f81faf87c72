//! Strict checks of a PyTorch zip archive (`torch.save` since 1.6: `.ckpt`, `.pt`, `.pth`,
//! `.bin`) before its tensors are read.
//!
//! burn-store's reader is lenient: a storage entry (`archive/data/N`) missing from the zip gives
//! a zero-filled tensor, a short one is zero-padded, and CRCs are not checked. Here, before it
//! runs, every storage the pickle references must exist with exactly `numel x element size`
//! bytes, and every entry of the archive must pass its CRC-32; otherwise the error names the
//! entry and the tensor(s) that use it.
//!
//! Finding the references needs the pickle's persistent ids (`('storage', FloatStorage, key,
//! location, numel)`), which `serde-pickle` does not support. [`storage_refs`] is a small
//! interpreter of the pickle opcodes that builds only what it needs: strings, integers, tuples,
//! classes and the dictionary keys above each reference. It executes nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use burn_store::pytorch::pickle_reader::storage_type_to_element_size;

use crate::error::{ModelError, Result};

/// One storage the pickle references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    /// PyTorch's storage class (`FloatStorage`, `HalfStorage`, ...).
    pub storage_type: String,
    /// The entry name under `data/`.
    pub key: String,
    /// Elements in the storage.
    pub numel: u64,
    /// The dictionary paths of the tensors using it (`state_dict.model.x.weight`).
    pub tensors: Vec<String>,
}

/// A value on the interpreter's stack: what the checks need, everything else as the
/// references it contains.
#[derive(Clone, Debug)]
enum Value {
    Mark,
    Str(String),
    Int(i64),
    Class(String),
    Tuple(Vec<Value>),
    /// Anything else, with the storages inside it by dictionary path (relative to it).
    Other(Vec<(String, String)>),
}

impl Value {
    /// The storages this value holds, by path.
    fn refs(&self) -> Vec<(String, String)> {
        match self {
            Value::Tuple(items) => items.iter().flat_map(Value::refs).collect(),
            Value::Other(r) => r.clone(),
            _ => vec![],
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("the pickle ends inside an opcode at byte {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> std::result::Result<u64, String> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated line at byte {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    /// A length-prefixed string of `n` length bytes.
    fn counted(&mut self, n: usize) -> std::result::Result<String, String> {
        let len = self.uint(n)? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}

struct Machine {
    stack: Vec<Value>,
    memo: BTreeMap<u64, Value>,
    storages: Vec<StorageRef>,
}

impl Machine {
    fn pop(&mut self) -> std::result::Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "the pickle pops an empty stack".to_string())
    }

    /// Everything above the topmost mark, in order; the mark is removed.
    fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| "the pickle has no mark to pop to".to_string())?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&self) -> std::result::Result<Value, String> {
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| "the pickle memoizes an empty stack".to_string())
    }

    /// A value built from `parts` (a call, an object, a list...): their references.
    fn combine(parts: &[Value]) -> Value {
        Value::Other(parts.iter().flat_map(Value::refs).collect())
    }

    /// `dict[key] = value` for each pair, on the dict below them.
    fn set_items(&mut self, pairs: Vec<Value>) -> std::result::Result<(), String> {
        let dict = self.pop()?;
        let mut refs = dict.refs();
        for pair in pairs.chunks(2) {
            let name = match &pair[0] {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => String::from("?"),
            };
            if let Some(v) = pair.get(1) {
                refs.extend(v.refs().into_iter().map(|(path, key)| {
                    let full = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{name}.{path}")
                    };
                    (full, key)
                }));
            }
        }
        self.stack.push(Value::Other(refs));
        Ok(())
    }

    fn persistent(&mut self, id: Value) -> std::result::Result<(), String> {
        let Value::Tuple(items) = id else {
            return Err("a persistent id that is not a tuple".into());
        };
        match items.as_slice() {
            [
                Value::Str(kind),
                Value::Class(storage_type),
                key,
                _location,
                Value::Int(numel),
            ] if kind == "storage" => {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(format!("a storage key that is not a string: {other:?}")),
                };
                let numel = u64::try_from(*numel)
                    .map_err(|_| format!("storage {key} has a negative size {numel}"))?;
                self.storages.push(StorageRef {
                    storage_type: storage_type.clone(),
                    key: key.clone(),
                    numel,
                    tensors: vec![],
                });
                self.stack.push(Value::Other(vec![(String::new(), key)]));
                Ok(())
            }
            _ => Err(format!("an unexpected persistent id {items:?}")),
        }
    }
}

/// The storages the pickle `bytes` references, each with the dictionary paths of its tensors.
pub fn storage_refs(bytes: &[u8]) -> std::result::Result<Vec<StorageRef>, String> {
    let mut r = Reader { bytes, pos: 0 };
    let mut m = Machine {
        stack: vec![],
        memo: BTreeMap::new(),
        storages: vec![],
    };
    loop {
        let at = r.pos;
        let op = *r.take(1)?.first().expect("one byte");
        match op {
            0x80 => drop(r.take(1)?),                                          // PROTO
            0x95 => drop(r.take(8)?),                                          // FRAME
            b'.' => break,                                                     // STOP
            b'(' => m.stack.push(Value::Mark),                                 // MARK
            b'0' => drop(m.pop()?),                                            // POP
            b'1' => drop(m.pop_mark()?),                                       // POP_MARK
            b'2' => m.stack.push(m.top()?),                                    // DUP
            b'N' | 0x88 | 0x89 => m.stack.push(Value::Other(vec![])), // NONE, NEWTRUE, NEWFALSE
            b'J' => m.stack.push(Value::Int(r.uint(4)? as u32 as i32 as i64)), // BININT
            b'K' => m.stack.push(Value::Int(r.uint(1)? as i64)),      // BININT1
            b'M' => m.stack.push(Value::Int(r.uint(2)? as i64)),      // BININT2
            0x8a | 0x8b => {
                // LONG1, LONG4: little-endian two's complement of the given length.
                let n = r.uint(if op == 0x8a { 1 } else { 4 })? as usize;
                let b = r.take(n)?;
                let v = if n == 0 {
                    0
                } else if n <= 8 {
                    let mut x = b.iter().rev().fold(0i64, |acc, &x| (acc << 8) | x as i64);
                    if n < 8 && b[n - 1] & 0x80 != 0 {
                        x -= 1i64 << (8 * n);
                    }
                    x
                } else {
                    i64::MAX
                };
                m.stack.push(Value::Int(v));
            }
            b'I' | b'L' => {
                // INT, LONG (text)
                let line = r.line()?;
                let t = line.trim_end_matches('L');
                m.stack.push(match t {
                    "00" | "01" => Value::Other(vec![]),
                    _ => Value::Int(t.parse().unwrap_or(i64::MAX)),
                });
            }
            b'G' => {
                r.take(8)?;
                m.stack.push(Value::Other(vec![]));
            }
            b'F' => {
                r.line()?;
                m.stack.push(Value::Other(vec![]));
            }
            b'X' => m.stack.push(Value::Str(r.counted(4)?)), // BINUNICODE
            0x8c => m.stack.push(Value::Str(r.counted(1)?)), // SHORT_BINUNICODE
            0x8d => m.stack.push(Value::Str(r.counted(8)?)), // BINUNICODE8
            b'V' => m.stack.push(Value::Str(r.line()?)),     // UNICODE
            b'T' => m.stack.push(Value::Str(r.counted(4)?)), // BINSTRING
            b'U' => m.stack.push(Value::Str(r.counted(1)?)), // SHORT_BINSTRING
            b'S' => {
                let s = r.line()?;
                m.stack
                    .push(Value::Str(s.trim_matches(|c| c == '\'' || c == '"').into()));
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                let n = match op {
                    b'B' => 4,
                    b'C' => 1,
                    _ => 8,
                };
                let len = r.uint(n)? as usize;
                r.take(len)?;
                m.stack.push(Value::Other(vec![]));
            }
            b')' => m.stack.push(Value::Tuple(vec![])), // EMPTY_TUPLE
            b't' => {
                let items = m.pop_mark()?;
                m.stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                // TUPLE1..TUPLE3
                let n = (op - 0x84) as usize;
                if m.stack.len() < n {
                    return Err(format!("TUPLE{n} on a short stack at byte {at}"));
                }
                let items = m.stack.split_off(m.stack.len() - n);
                m.stack.push(Value::Tuple(items));
            }
            b']' | b'}' | 0x8f => m.stack.push(Value::Other(vec![])), // EMPTY_LIST/DICT/SET
            b'l' | 0x91 => {
                // LIST, FROZENSET
                let items = m.pop_mark()?;
                m.stack.push(Machine::combine(&items));
            }
            b'd' => {
                // DICT
                let items = m.pop_mark()?;
                m.stack.push(Value::Other(vec![]));
                m.set_items(items)?;
            }
            b'a' => {
                // APPEND
                let v = m.pop()?;
                let list = m.pop()?;
                m.stack.push(Machine::combine(&[list, v]));
            }
            b'e' | 0x90 => {
                // APPENDS, ADDITEMS
                let mut items = m.pop_mark()?;
                items.push(m.pop()?);
                m.stack.push(Machine::combine(&items));
            }
            b's' => {
                // SETITEM
                let v = m.pop()?;
                let k = m.pop()?;
                m.set_items(vec![k, v])?;
            }
            b'u' => {
                // SETITEMS
                let items = m.pop_mark()?;
                m.set_items(items)?;
            }
            b'c' => {
                // GLOBAL module\nname\n
                let module = r.line()?;
                let name = r.line()?;
                let _ = module;
                m.stack.push(Value::Class(name));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = m.pop()?;
                let _module = m.pop()?;
                m.stack.push(match name {
                    Value::Str(n) => Value::Class(n),
                    _ => Value::Other(vec![]),
                });
            }
            b'i' => {
                // INST module\nname\n, arguments above a mark
                r.line()?;
                r.line()?;
                let items = m.pop_mark()?;
                m.stack.push(Machine::combine(&items));
            }
            b'o' => {
                // OBJ
                let items = m.pop_mark()?;
                m.stack.push(Machine::combine(&items));
            }
            b'R' | b'b' | 0x81 => {
                // REDUCE, BUILD, NEWOBJ: two operands
                let b = m.pop()?;
                let a = m.pop()?;
                m.stack.push(Machine::combine(&[a, b]));
            }
            0x92 => {
                // NEWOBJ_EX: three operands
                let c = m.pop()?;
                let b = m.pop()?;
                let a = m.pop()?;
                m.stack.push(Machine::combine(&[a, b, c]));
            }
            b'q' | b'r' | b'p' => {
                // BINPUT, LONG_BINPUT, PUT
                let idx = match op {
                    b'q' => r.uint(1)?,
                    b'r' => r.uint(4)?,
                    _ => r
                        .line()?
                        .parse()
                        .map_err(|_| format!("bad PUT at byte {at}"))?,
                };
                m.memo.insert(idx, m.top()?);
            }
            0x94 => {
                // MEMOIZE
                let idx = m.memo.len() as u64;
                m.memo.insert(idx, m.top()?);
            }
            b'h' | b'j' | b'g' => {
                // BINGET, LONG_BINGET, GET
                let idx = match op {
                    b'h' => r.uint(1)?,
                    b'j' => r.uint(4)?,
                    _ => r
                        .line()?
                        .parse()
                        .map_err(|_| format!("bad GET at byte {at}"))?,
                };
                let v =
                    m.memo.get(&idx).cloned().ok_or_else(|| {
                        format!("memo {idx} read before it is written (byte {at})")
                    })?;
                m.stack.push(v);
            }
            b'Q' => {
                // BINPERSID
                let id = m.pop()?;
                m.persistent(id)?;
            }
            b'P' => {
                return Err(format!(
                    "a text persistent id at byte {at} (not a torch.save file)"
                ));
            }
            0x82..=0x84 => {
                // EXT1, EXT2, EXT4
                r.take(match op {
                    0x82 => 1,
                    0x83 => 2,
                    _ => 4,
                })?;
                m.stack.push(Value::Other(vec![]));
            }
            0x97 | 0x98 => return Err(format!("out-of-band buffers at byte {at}")),
            other => return Err(format!("unknown pickle opcode 0x{other:02x} at byte {at}")),
        }
    }
    // Attach the dictionary paths of the finished object to its storages.
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, key) in m.stack.iter().flat_map(Value::refs) {
        by_key.entry(key).or_default().push(path);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = vec![];
    for mut s in m.storages {
        if seen.insert(s.key.clone()) {
            s.tensors = by_key.remove(&s.key).unwrap_or_default();
            out.push(s);
        }
    }
    Ok(out)
}

/// A zip archive's entries: name and uncompressed size.
fn entries(path: &Path) -> Result<BTreeMap<String, u64>> {
    let bad = |e: String| ModelError::checkpoint(path, e);
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
        out.insert(entry.name().to_string(), entry.size());
    }
    Ok(out)
}

/// Reads `name` to the end (the zip reader checks its CRC-32 there).
fn read_entry(zip: &mut zip::ZipArchive<BufReader<File>>, name: &str) -> std::io::Result<Vec<u8>> {
    let mut entry = zip.by_name(name)?;
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Checks a PyTorch zip archive as the module docs say. A file that is not a zip (the legacy
/// pickle format, or a TAR) is left to the reader.
pub fn check(path: &Path) -> Result<()> {
    let bad = |e: String| ModelError::checkpoint(path, e);
    let mut magic = [0u8; 4];
    let is_zip = File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"PK\x03\x04";
    if !is_zip {
        return Ok(());
    }
    let sizes = entries(path)?;
    let pickle = sizes
        .keys()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .cloned()
        .ok_or_else(|| bad("no data.pkl in the archive (not a torch.save file)".into()))?;
    let prefix = pickle.trim_end_matches("data.pkl");
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let bytes = read_entry(&mut zip, &pickle).map_err(|e| bad(format!("{pickle}: {e}")))?;
    let refs = storage_refs(&bytes).map_err(|e| bad(format!("{pickle}: {e}")))?;
    for s in &refs {
        let entry = format!("{prefix}data/{}", s.key);
        let used_by = match s.tensors.as_slice() {
            [] => String::new(),
            [one] => format!(" (tensor `{one}`)"),
            [one, rest @ ..] => format!(" (tensor `{one}` and {} more)", rest.len()),
        };
        let size = sizes.get(&entry).ok_or_else(|| {
            bad(format!(
                "storage entry `{entry}`{used_by} is referenced by the pickle but missing from \
                 the archive"
            ))
        })?;
        let elem = storage_type_to_element_size(&s.storage_type)
            .map_err(|e| bad(format!("`{entry}`{used_by}: {e}")))?;
        let want = s.numel.saturating_mul(elem as u64);
        if *size != want {
            return Err(bad(format!(
                "storage entry `{entry}`{used_by} holds {size} bytes, but its {} {} elements \
                 need {want}",
                s.numel, s.storage_type
            )));
        }
    }
    // Every entry's CRC-32 (the data entries are read here once more, streamed).
    for name in sizes.keys() {
        let mut entry = zip
            .by_name(name)
            .map_err(|e| bad(format!("zip entry `{name}`: {e}")))?;
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| bad(format!("zip entry `{name}` is damaged: {e}")))?;
    }
    Ok(())
}
