//! Backends and devices: which are compiled in and how `--device` names them ([`backend`]), the
//! host allocator that counts the CPU's bytes ([`allocator`]), what a device holds and offers
//! ([`usage`]), and the order of passes when a batch is shared by several devices
//! ([`turnstile`]).

pub mod allocator;
pub mod backend;
pub mod info;
pub mod turnstile;
pub mod usage;
