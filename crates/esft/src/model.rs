//! The MoE-model interface ESFT works through lives with the models, in `moe_arch::model`; it
//! is re-exported here so `esft::MoeModel` keeps working.

pub use moe_arch::model::{MoeLayerInfo, MoeModel};
