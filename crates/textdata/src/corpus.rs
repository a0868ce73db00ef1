//! Plain-text corpora read from folders.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One text document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Where it came from.
    pub path: PathBuf,
    /// Its UTF-8 text (invalid bytes replaced).
    pub text: String,
}

/// Every file ending in `.ext` under `dir` (recursively), sorted by path so the order is the
/// same on every machine.
pub fn read_text_dir(dir: &Path, ext: &str) -> Result<Vec<Document>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == ext) {
                files.push(path);
            }
        }
    }
    files.sort();
    let docs: Vec<Document> = files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            Ok(Document {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                path,
            })
        })
        .collect::<Result<_>>()?;
    if docs.is_empty() {
        return Err(Error::EmptyCorpus {
            dir: dir.to_path_buf(),
            ext: ext.to_string(),
        });
    }
    Ok(docs)
}

/// Splits documents deterministically: every `k`-th document (k = round(1 / fraction), at most the
/// number of items) goes to validation, so both splits sample the whole corpus (all topics of a
/// sorted folder tree). Fewer than two items, or a zero fraction, leave validation empty.
pub fn split_every_kth<T: Clone>(items: &[T], valid_fraction: f64) -> (Vec<T>, Vec<T>) {
    if items.len() < 2 || valid_fraction <= 0.0 {
        return (items.to_vec(), Vec::new());
    }
    // Never more than one period longer than the list, so a short list still yields a document.
    let k = ((1.0 / valid_fraction.min(0.5)).round().max(2.0) as usize).min(items.len());
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for (i, x) in items.iter().enumerate() {
        if i % k == k - 1 {
            valid.push(x.clone());
        } else {
            train.push(x.clone());
        }
    }
    (train, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sorted_recursively_and_filters_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/2.txt"), "two").unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        std::fs::write(dir.path().join("skip.md"), "no").unwrap();
        let docs = read_text_dir(dir.path(), "txt").unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
    }

    #[test]
    fn empty_folder_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_text_dir(dir.path(), "txt"),
            Err(Error::EmptyCorpus { .. })
        ));
    }

    #[test]
    fn a_short_list_still_gets_one_validation_item() {
        let (t, v) = split_every_kth(&[1, 2, 3], 0.1);
        assert_eq!((t, v), (vec![1, 2], vec![3]));
    }

    #[test]
    fn split_is_disjoint_and_complete() {
        let items: Vec<usize> = (0..100).collect();
        let (t, v) = split_every_kth(&items, 0.1);
        assert_eq!(v.len(), 10);
        assert_eq!(t.len() + v.len(), 100);
        assert!(v.iter().all(|x| !t.contains(x)));
    }
}
