//! Runs, from specs to records and tables: the inputs a run needs ([`prepare`]), one run
//! trained and evaluated ([`run`]), several at once ([`parallel`]), the ablation driver that
//! resolves a file's runs, runs them and writes their table ([`ablation`]), and a finished run's
//! predictions on a split ([`predict`]). [`workspace`] holds what the runs of one command share.

pub mod ablation;
pub mod evaluate_run;
pub mod parallel;
pub mod predict;
pub mod prepare;
pub mod qualitative;
pub mod run;
pub mod segment;
pub mod workspace;
