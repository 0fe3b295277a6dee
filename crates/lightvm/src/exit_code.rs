//! The exit code of `lightvm` itself failing (the others are the guest's status and
//! the monitor's verdicts, `lightvm_vmm::report::exit_code`).

pub use lightvm_vmm::report::exit_code::LIGHTVM_ERROR;
