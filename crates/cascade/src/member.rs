//! One cascade member: a complete BERT encoder with its own classification head — `plm`'s
//! [`PooledClassifier`](plm::bert::PooledClassifier).

pub use plm::bert::{PooledClassifier as Member, Pooling};
