//! Runs, from specs to records and tables: the inputs a run needs ([`prepare`]), one run
//! trained and evaluated ([`run`]), several at once ([`parallel`]), one in a process of its own
//! ([`run_spec`]), the ablation driver that resolves a file's runs, runs them and writes their
//! table ([`ablation`]); and what is done with a finished run: its predictions on a split
//! ([`predict`]), scored ([`evaluate_run`]), drawn ([`qualitative`]), or one image and text
//! segmented ([`segment`]). [`workspace`] holds what the runs of one command share.

pub mod ablation;
pub mod evaluate_run;
pub mod parallel;
pub mod predict;
pub mod prepare;
pub mod qualitative;
pub mod run;
pub mod run_spec;
pub mod segment;
pub mod workspace;
