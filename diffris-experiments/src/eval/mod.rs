//! Scores: the metrics of the paper's protocol ([`metrics`]) and the evaluation of a model on
//! an encoded split ([`evaluate`]), and the scoring of saved masks of any method ([`score`]).

pub mod bootstrap;
pub mod evaluate;
pub mod metrics;
pub mod score;
