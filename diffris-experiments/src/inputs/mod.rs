//! A run's inputs: the frozen SD stack ([`frozen`]), its splits as it reads them ([`held_out`]:
//! a validation split may be held out of the training split), and splits encoded by it
//! ([`encode`]) into
//! the on-disk cache ([`encoded_cache`], named by the [`fingerprint`] of the files they come
//! from), read back a row at a time ([`rows`]) as an [`split::EncodedSplit`].

pub mod encode;
pub mod encoded_cache;
pub mod features;
pub mod fingerprint;
pub mod frozen;
pub mod held_out;
pub mod init_sd;
pub mod query;
pub mod rows;
pub mod split;
