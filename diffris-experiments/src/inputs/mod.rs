//! A run's inputs: the frozen SD stack ([`frozen`]), and splits encoded by it
//! ([`encoded`]) into the on-disk cache ([`encoded_cache`], read a row at a time through
//! [`rows`], named by the [`fingerprint`] of the files they come from).

pub mod encoded;
pub mod encoded_cache;
pub mod fingerprint;
pub mod frozen;
pub mod rows;
