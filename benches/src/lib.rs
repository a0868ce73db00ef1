//! Shared helpers for the criterion benches in `benches/benches/`.
//!
//! The backend is chosen by this crate's features (`flex` by default, `wgpu`, `tch`, `cuda`) and,
//! when several are compiled in, by the `BENCH_DEVICE` environment variable (a name of
//! [`trainer::device::from_name`]).

use burn::prelude::Device;

/// The device benches run on: `BENCH_DEVICE` (flex, wgpu, tch, tch-cuda, cuda) or flex.
///
/// # Panics
/// When the named backend was not compiled into the bench binary (a bench cannot run without it).
#[allow(clippy::panic)]
pub fn bench_device() -> Device {
    let name = std::env::var("BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    match trainer::device::from_name(&name) {
        Ok((d, _)) => d,
        Err(e) => panic!("BENCH_DEVICE={name}: {e}"),
    }
}
