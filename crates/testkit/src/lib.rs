//! Test support shared by the workspace's tests; every crate takes it as a dev-dependency only.
//!
//! - [`device_rng_lock`]: burn's device RNG is process-global, and the test harness runs a
//!   binary's tests on several threads, so a test that seeds it (or trains, which reseeds it every
//!   step) holds this lock for its whole body; otherwise another test's draws interleave with its
//!   own and "same seed, same result" checks fail at random.
//! - [`max_abs_diff`], [`assert_allclose`], [`tensor_values`], [`assert_tensor_close`]:
//!   comparisons that check the lengths (and, for tensors, the shapes) before any value, so a
//!   result that comes out empty or of the wrong size fails instead of comparing nothing.

#![allow(clippy::panic)]

use std::sync::{Mutex, MutexGuard};

use burn::prelude::*;

static DEVICE_RNG: Mutex<()> = Mutex::new(());

/// Holds the lock every test that seeds burn's device RNG (or trains) takes. A test that
/// panicked while holding it does not poison it for the others.
pub fn device_rng_lock() -> MutexGuard<'static, ()> {
    DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// The largest absolute difference of two value lists of the same length (panics, naming both
/// lengths, when they differ).
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{} values where {} were expected",
        got.len(),
        want.len()
    );
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise, after checking the lengths; the
/// message names `what`, the worst element and both values there. NaN never passes.
pub fn assert_allclose(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values where {} were expected",
        got.len(),
        want.len()
    );
    let mut worst: Option<(usize, f32)> = None;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        let excess = if excess.is_nan() {
            f32::INFINITY
        } else {
            excess
        };
        if excess > 0.0 && worst.is_none_or(|(_, w)| excess > w) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} is {} where {} was expected (atol {atol}, rtol {rtol})",
            got[i], want[i]
        );
    }
}

/// A tensor's values as f32 after asserting its shape.
pub fn tensor_values<const D: usize>(t: Tensor<D>, shape: &[usize]) -> Vec<f32> {
    assert_eq!(t.dims().as_slice(), shape, "tensor shape");
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_else(|e| panic!("reading the tensor back: {e:?}"))
}

/// [`assert_allclose`] for a tensor, after asserting its shape.
pub fn assert_tensor_close<const D: usize>(
    got: Tensor<D>,
    want: &[f32],
    shape: &[usize],
    atol: f32,
    what: &str,
) {
    assert_allclose(&tensor_values(got, shape), want, atol, 0.0, what);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lists_pass_and_the_worst_element_is_named() {
        assert_allclose(&[1.0, 2.0], &[1.0, 2.0 + 1e-7], 1e-6, 0.0, "x");
        let r =
            std::panic::catch_unwind(|| assert_allclose(&[1.0, 5.0], &[1.1, 2.0], 0.5, 0.0, "y"));
        let msg = r.err().and_then(|e| e.downcast_ref::<String>().cloned());
        assert!(msg.is_some_and(|m| m.contains("element 1")));
    }

    #[test]
    fn different_lengths_and_nan_fail() {
        assert!(std::panic::catch_unwind(|| assert_allclose(&[], &[1.0], 1.0, 0.0, "e")).is_err());
        assert!(std::panic::catch_unwind(|| max_abs_diff(&[1.0], &[])).is_err());
        assert!(
            std::panic::catch_unwind(|| assert_allclose(&[f32::NAN], &[0.0], 1.0, 0.0, "n"))
                .is_err()
        );
    }

    #[test]
    fn a_tensor_of_the_wrong_shape_fails_before_its_values() {
        let d = Device::flex();
        let t = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &d);
        assert_tensor_close(t.clone(), &[1.0, 2.0], &[1, 2], 0.0, "ok");
        assert!(std::panic::catch_unwind(|| tensor_values(t, &[2, 1])).is_err());
    }
}
