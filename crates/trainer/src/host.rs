//! Reading tensors back to the host: the one place the workspace turns burn's read errors into
//! a typed error ([`TensorReadError`]), which every crate's `Error` takes with `#[from]`.
//!
//! Each read converts to the asked element type first, so it works for weights held in bf16 or
//! f16 and for any integer dtype.

use burn::prelude::*;

/// A tensor could not be read back to the host (burn's reason, as text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TensorReadError(pub String);

fn err(e: impl std::fmt::Debug) -> TensorReadError {
    TensorReadError(format!("{e:?}"))
}

/// The values of a float tensor as f32, in row-major order.
pub fn f32s<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TensorReadError> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(err)
}

/// The values of a float tensor as f64, in row-major order.
pub fn f64s<const D: usize>(t: Tensor<D>) -> Result<Vec<f64>, TensorReadError> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_err(err)
}

/// The values of an integer tensor as i64, in row-major order.
pub fn i64s<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>, TensorReadError> {
    t.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(err)
}

/// Method forms of [`f32s`], [`f64s`] and [`scalar`] for float tensors (`use trainer::host::ToHost`).
pub trait ToHost {
    /// The values as f32.
    fn to_f32s(self) -> Result<Vec<f32>, TensorReadError>;
    /// The values as f64.
    fn to_f64s(self) -> Result<Vec<f64>, TensorReadError>;
    /// The first value as f64.
    fn to_scalar(self) -> Result<f64, TensorReadError>;
}

impl<const D: usize> ToHost for Tensor<D> {
    fn to_f32s(self) -> Result<Vec<f32>, TensorReadError> {
        f32s(self)
    }
    fn to_f64s(self) -> Result<Vec<f64>, TensorReadError> {
        f64s(self)
    }
    fn to_scalar(self) -> Result<f64, TensorReadError> {
        scalar(self)
    }
}

/// The method form of [`i64s`] for integer tensors (`use trainer::host::IntsToHost`).
pub trait IntsToHost {
    /// The values as i64.
    fn to_i64s(self) -> Result<Vec<i64>, TensorReadError>;
}

impl<const D: usize> IntsToHost for Tensor<D, Int> {
    fn to_i64s(self) -> Result<Vec<i64>, TensorReadError> {
        i64s(self)
    }
}

/// The first value of a float tensor (a loss, a norm) as f64.
pub fn scalar<const D: usize>(t: Tensor<D>) -> Result<f64, TensorReadError> {
    let v = f64s(t)?;
    v.first()
        .copied()
        .ok_or_else(|| TensorReadError("an empty tensor has no scalar".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_convert_to_the_asked_type() {
        let d = Device::flex();
        let t = Tensor::<2>::from_data(TensorData::new(vec![1.5f32, -2.0], [1, 2]), &d);
        assert_eq!(f32s(t.clone()).unwrap(), vec![1.5, -2.0]);
        assert_eq!(f64s(t.clone()).unwrap(), vec![1.5, -2.0]);
        assert_eq!(scalar(t).unwrap(), 1.5);
        let i = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 4], [2]), &d);
        assert_eq!(i64s(i).unwrap(), vec![3, 4]);
        let empty = Tensor::<1>::from_data(TensorData::new(Vec::<f32>::new(), [0]), &d);
        assert!(scalar(empty).is_err());
    }
}
