//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod data;
pub mod eval;
pub mod interop;
pub mod models;
pub mod quickstart;
pub mod report;
pub mod run;
pub mod status;
