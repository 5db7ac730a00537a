//! One module per subcommand: `data`, `models`.

pub mod data;
pub mod models;
