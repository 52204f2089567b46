//! What weir's benchmarks share, so that `cargo xtask bench ...` and the
//! benchmark binaries that run inside a simulated node measure the same way:
//! the wrk load and the parsing of its report ([`load`]), CPU and memory from
//! /proc ([`measure`]), descriptors by kind, BPF map memory and threads
//! ([`footprint`]), one run's numbers, their medians and the line
//! format a run travels in between processes ([`sample`]), the percentiles
//! of one-off latencies such as a pod's enrolment ([`latency`]), the names of
//! the interception benchmark's scenarios ([`intercept`]), and the attacks,
//! setups and report of the neighbours benchmark ([`neighbours`]), and the
//! progress line with an estimate of the time left ([`progress`]).

pub mod footprint;
pub mod intercept;
pub mod latency;
pub mod load;
pub mod measure;
pub mod neighbours;
pub mod progress;
pub mod sample;
