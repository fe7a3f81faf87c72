//! One training step, measured ([`step_probe`]: `doctor`, `bench_unet`) or compared between a
//! half-precision and an f32 backend ([`half_step`]); the device check built from both
//! ([`doctor`]).

pub mod doctor;
pub mod half_step;
pub mod step_probe;
