//! `--device NAME` → a burn [`Device`], with a clear error when the backend was not compiled in.

use anyhow::{Result, bail};
use burn::prelude::Device;

/// The device names `--device` accepts.
pub const NAMES: &str = "flex, wgpu, wgpu-cpu, tch, tch-cuda, cuda";

/// Resolves a device name; the string returned describes it for reports.
#[allow(unreachable_code)]
pub fn from_name(name: &str) -> Result<(Device, String)> {
    let missing = |feature: &str| -> Result<(Device, String)> {
        bail!(
            "device '{name}' needs the `{feature}` backend, which this binary was built without: \
             rebuild with `cargo run --release -p xtask --features {feature} -- ...`"
        )
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
        other => bail!("unknown device '{other}' (expected one of: {NAMES})"),
    }
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
        assert!(err.contains("--features cuda"), "{err}");
    }
}
