//! The decoder interface the analyses use lives with the decoders, in `plm::causal`; it is
//! re-exported here so `icl_anchors::CausalLm` keeps working.

pub use plm::causal::CausalLm;
