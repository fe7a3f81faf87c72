//! A run's splits as it reads them: the dataset's own, or, for a dataset published without a
//! validation split (RISBench's public download), a validation split held out of the training
//! split (`val_from_train: N`, `--val-from-train N`).
//!
//! The held-out set is whole images (every expression of an image on one side, so validation
//! never sees an image training saw), taken in the order of a fixed hash (FNV-1a) of each
//! image's path below the dataset root until they hold at least N expressions: the same set for
//! every run, seed and machine, wherever the dataset lies. Both sides keep the file's order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::Sample;

use crate::config::RunSpec;
use crate::util::cache::fnv1a;

/// The samples of `split` of `spec`'s dataset as the run reads them (see the module doc).
pub fn read_split(spec: &RunSpec, split: &str) -> anyhow::Result<Vec<Sample>> {
    let read = |name: &str| {
        spec.dataset
            .read_split(&spec.data_root, name)
            .with_context(|| format!("reading the {name} split of {}", spec.data_root.display()))
    };
    match spec.val_from_train {
        Some(n) if split == spec.val_split || split == spec.train_split => {
            let (train, val) = hold_out(read(&spec.train_split)?, n, &spec.data_root)
                .with_context(|| format!("val_from_train: {n}"))?;
            Ok(if split == spec.val_split { val } else { train })
        }
        _ => read(split),
    }
}

/// `samples` split into (kept, held out): whole images, in the order of the hash of their path
/// below `root`, until the held-out side has at least `n` samples.
pub fn hold_out(
    samples: Vec<Sample>,
    n: usize,
    root: &Path,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    anyhow::ensure!(n > 0, "hold out at least one expression");
    let mut per_image: BTreeMap<&PathBuf, usize> = BTreeMap::new();
    for s in &samples {
        *per_image.entry(&s.image).or_default() += 1;
    }
    let key = |p: &Path| {
        let rel = p.strip_prefix(root).unwrap_or(p);
        (fnv1a(rel.to_string_lossy().bytes()), rel.to_path_buf())
    };
    let mut order: Vec<(&PathBuf, usize)> = per_image.into_iter().collect();
    order.sort_by_cached_key(|(p, _)| key(p));
    let mut held = BTreeSet::new();
    let mut count = 0;
    for (image, k) in order {
        if count >= n {
            break;
        }
        held.insert(image.clone());
        count += k;
    }
    anyhow::ensure!(
        count < samples.len(),
        "holding out {n} expressions leaves no training sample (the training split has {} \
         expressions)",
        samples.len()
    );
    Ok(samples.into_iter().partition(|s| !held.contains(&s.image)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffris_data::MaskSource;

    fn sample(image: &str, i: usize) -> Sample {
        Sample {
            id: format!("line {i}"),
            image: PathBuf::from("/data/img").join(image),
            mask: MaskSource::File {
                path: PathBuf::from("/data/mask").join(image),
                threshold: 0,
            },
            sentence: format!("object {i}"),
            category: None,
            origin: PathBuf::from("/data/output_phrase_train.txt"),
        }
    }

    /// Images a..f with 1, 2, 1, 3, 1, 2 expressions.
    fn split() -> Vec<Sample> {
        let mut out = Vec::new();
        for (image, k) in [("a", 1), ("b", 2), ("c", 1), ("d", 3), ("e", 1), ("f", 2)] {
            for _ in 0..k {
                let i = out.len();
                out.push(sample(image, i));
            }
        }
        out
    }

    fn images(s: &[Sample]) -> BTreeSet<String> {
        s.iter()
            .map(|s| s.image.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn whole_images_in_hash_order_until_n_are_held_out() {
        let root = Path::new("/data");
        // The order by hand: FNV-1a of each path below the root.
        let mut by_hash: Vec<(u64, &str, usize)> =
            [("a", 1), ("b", 2), ("c", 1), ("d", 3), ("e", 1), ("f", 2)]
                .iter()
                .map(|&(name, k)| (fnv1a(format!("img/{name}").bytes()), name, k))
                .collect();
        by_hash.sort();
        for n in 1..=8 {
            let (train, val) = hold_out(split(), n, root).unwrap();
            let mut expected = BTreeSet::new();
            let mut count = 0;
            for &(_, name, k) in &by_hash {
                if count >= n {
                    break;
                }
                expected.insert(name.to_string());
                count += k;
            }
            assert_eq!(images(&val), expected, "n = {n}");
            assert_eq!(val.len(), count);
            assert!(
                images(&train).is_disjoint(&images(&val)),
                "no image on both sides"
            );
            assert_eq!(train.len() + val.len(), 10);
            // Both sides keep the file's order.
            let ids = |s: &[Sample]| -> Vec<usize> {
                s.iter().map(|s| s.id[5..].parse().unwrap()).collect()
            };
            assert!(ids(&train).windows(2).all(|w| w[0] < w[1]));
            assert!(ids(&val).windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn the_choice_does_not_depend_on_where_the_dataset_lies_or_its_order() {
        let (_, here) = hold_out(split(), 4, Path::new("/data")).unwrap();
        let moved: Vec<Sample> = split()
            .into_iter()
            .rev()
            .map(|mut s| {
                s.image = Path::new("/elsewhere/ds").join(s.image.strip_prefix("/data").unwrap());
                s
            })
            .collect();
        let (_, there) = hold_out(moved, 4, Path::new("/elsewhere/ds")).unwrap();
        assert_eq!(images(&here), images(&there));
    }

    #[test]
    fn holding_out_everything_or_nothing_is_refused() {
        let err = hold_out(split(), 10, Path::new("/data")).unwrap_err();
        assert!(
            err.to_string().contains("leaves no training sample"),
            "{err}"
        );
        assert!(hold_out(split(), 0, Path::new("/data")).is_err());
    }
}
