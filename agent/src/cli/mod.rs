//! Commands an operator runs against a running agent.

pub mod status;
