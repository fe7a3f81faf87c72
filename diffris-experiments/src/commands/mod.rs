//! One module per subcommand.

pub mod features;
pub mod info;
pub mod init_sd;
pub mod tokenize;
