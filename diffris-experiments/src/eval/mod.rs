//! Scores: the metrics of the paper's protocol ([`metrics`]) and the evaluation of a model on
//! an encoded split ([`evaluate`]).

pub mod evaluate;
pub mod metrics;
