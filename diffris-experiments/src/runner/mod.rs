//! A run from its spec to its records: the inputs it needs ([`prepare`]), training and
//! evaluation ([`run`]), several runs at once ([`parallel`]), what it writes ([`record`]), and
//! finished runs read back ([`reload`]). [`workspace`] holds what the runs of one command share.

pub mod parallel;
pub mod prepare;
pub mod record;
pub mod reload;
pub mod run;
pub mod workspace;
