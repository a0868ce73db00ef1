//! The fine-purify experiment.
