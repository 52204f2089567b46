//! The `weir` command line ([`args`]) and the commands an operator runs
//! against a running agent.

pub mod args;
pub mod status;
