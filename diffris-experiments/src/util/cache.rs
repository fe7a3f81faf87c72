//! The cache directory (SynthRS, random tiny SD weights, encoded splits) and the stable hash that
//! names its entries after the configuration that produced them.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `$DIFFRIS_CACHE`, else `$XDG_CACHE_HOME/diffris`, else `~/.cache/diffris`, else
/// `./.diffris-cache`.
pub fn default_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("DIFFRIS_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("diffris");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("diffris");
    }
    PathBuf::from(".diffris-cache")
}

/// The 64-bit FNV-1a hash (stable across platforms and releases, unlike `std`'s hasher).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = Fnv1a::new();
    for b in bytes {
        h.byte(b);
    }
    h.finish()
}

/// [`fnv1a`] fed a piece at a time (a file as it is read or written).
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The 64-bit FNV-1a digest of a file's bytes, as `fnv1a64:HEX` (detects any edit or damage,
/// not a deliberate collision).
pub fn file_digest(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hash = Fnv1a::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(digest_text(hash.finish()))
}

/// How a digest is written (in `result.json` and beside checkpoint files).
pub fn digest_text(hash: u64) -> String {
    format!("fnv1a64:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (64-bit FNV-1a).
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }
}
