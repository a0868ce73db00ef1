//! Backend selection by name at run time: `flex`, `wgpu`, `wgpu-cpu`, `tch`, `tch-cuda`, `cuda`.
//!
//! Burn 0.22 picks the backend through [`Device`]; which backends exist is fixed when the binary
//! is built, by this crate's features of the same names (`flex`, `wgpu`, `tch`, `cuda`, each
//! forwarding to burn's). A name whose backend was not compiled in is answered with
//! [`Error::BackendNotCompiled`], which names the feature to add.
//!
//! [`from_env`] reads the name from `PAPERS_DEVICE` (default `flex`): the golden tests of plm and
//! moe-arch use it, so the same test binary checks the numerics on whatever device it is given,
//! for instance `PAPERS_DEVICE=wgpu` on a GPU machine.

use burn::prelude::Device;

use crate::{Error, Result};

/// The device names [`from_name`] accepts.
pub const NAMES: &str = "flex, wgpu, wgpu-cpu, tch, tch-cuda, cuda";

/// The environment variable [`from_env`] reads.
pub const ENV: &str = "PAPERS_DEVICE";

/// Resolves a device name; the string returned describes the device for reports.
#[allow(unreachable_code)]
pub fn from_name(name: &str) -> Result<(Device, String)> {
    let missing = |feature: &'static str| -> Result<(Device, String)> {
        Err(Error::BackendNotCompiled {
            name: name.to_string(),
            feature,
        })
    };
    match name {
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok((Device::flex(), "flex (CPU)".into()));
            missing("flex")
        }
        "wgpu" | "wgpu-cpu" => {
            #[cfg(feature = "wgpu")]
            {
                let kind = if name == "wgpu-cpu" {
                    burn::tensor::DeviceKind::Cpu
                } else {
                    burn::tensor::DeviceKind::DefaultDevice
                };
                let what = format!("wgpu ({kind:?})");
                return Ok((Device::wgpu(kind), what));
            }
            missing("wgpu")
        }
        "tch" | "tch-cuda" => {
            #[cfg(feature = "tch")]
            {
                #[allow(deprecated)]
                let d = if name == "tch" {
                    Device::libtorch()
                } else {
                    Device::libtorch_cuda(0)
                };
                return Ok((d, format!("libtorch ({name})")));
            }
            missing("tch")
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Ok((Device::cuda(0), "cuda:0".into()));
            missing("cuda")
        }
        other => Err(Error::UnknownDevice {
            name: other.to_string(),
            expected: NAMES,
        }),
    }
}

/// The device named by `PAPERS_DEVICE`, or flex when it is unset or empty.
pub fn from_env() -> Result<(Device, String)> {
    let name = std::env::var(ENV).unwrap_or_default();
    from_name(if name.is_empty() { "flex" } else { name.trim() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_names_are_rejected_with_the_list() {
        let err = from_name("tpu")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unknown device 'tpu'") && err.contains("flex"),
            "{err}"
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_names_the_feature() {
        let err = from_name("cuda")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
