//! What a run leaves in its folder ([`crate::config::RunDir`]) besides its config: how it was
//! trained ([`env`], `env.json`) and how it ended ([`outcome`], `result.json`), each test sample's score
//! ([`test_scores`]), and the finished run read back as a model ([`reload`]).

pub mod env;
pub mod outcome;
pub mod reload;
pub mod test_scores;
pub mod tfevents;

pub use env::{CpuRecord, EnvRecord, TrainedAs};
pub use outcome::{DivergedRun, Outcome, RunResult, outcome_line, write_json};
pub use test_scores::TestScores;
