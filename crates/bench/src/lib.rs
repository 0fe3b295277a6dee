//! Benchmarks that put lightvm next to the platforms people choose instead of VMs.
//!
//! Every comparison runs its platforms in one process, interleaved, so that the
//! noise of a shared machine hits them alike; results are reported as ratios to the
//! process baseline measured in the same run, never as absolute promises.

pub mod boot;
pub mod density;
pub mod stats;

pub use boot::{BenchError, BootBench, BootResults, PlatformResult};
pub use density::{DensityBench, DensityResults};
pub use stats::Summary;
