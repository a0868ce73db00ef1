//! `--device NAME` → a burn [`Device`]: [`trainer::device`] does the work (and names the missing
//! feature when a backend was not compiled in); this wrapper only adapts the error type.

use anyhow::Result;
use burn::prelude::Device;

/// Resolves a device name; the string returned describes it for reports.
pub fn from_name(name: &str) -> Result<(Device, String)> {
    Ok(trainer::device::from_name(name)?)
}
