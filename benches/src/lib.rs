//! Shared helpers for the criterion benches in `benches/benches/`.
//!
//! The backend is chosen by this crate's features (`flex` by default, `wgpu`, `tch`, `cuda`) and,
//! when several are compiled in, by the `BENCH_DEVICE` environment variable.

use burn::prelude::Device;

/// The device benches run on: `BENCH_DEVICE` (flex, wgpu, tch, tch-cuda, cuda) or flex.
#[allow(unreachable_code)]
pub fn bench_device() -> Device {
    let name = std::env::var("BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    match name.as_str() {
        #[cfg(feature = "wgpu")]
        "wgpu" => return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" => return Device::libtorch(),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch-cuda" => return Device::libtorch_cuda(0),
        #[cfg(feature = "cuda")]
        "cuda" => return Device::cuda(0),
        _ => {}
    }
    #[cfg(feature = "flex")]
    return Device::flex();
    #[allow(clippy::panic)]
    {
        panic!("BENCH_DEVICE={name} is not compiled into this bench binary")
    }
}
