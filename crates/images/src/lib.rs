//! Image builders of lightvm: what `lightvm build` runs.
//!
//! * [`unikernel`]: turns a Rust guest application (a `no_std` binary crate that
//!   links `libos`) into a bootable static ELF, with the target, link flags and
//!   linker script a freestanding unikernel needs.
//! * [`kernel`]: builds Linux kernels from Debian's linux-source with the
//!   project's config fragments (`lightvm kernel build`), cached by config hash.
//! * [`rootfs`]: packs a Linux program's root filesystem, and what to run in it,
//!   into the archive the Linux personality unpacks.
//! * [`program_root`]: makes a minimal root filesystem for one host program (its
//!   loader and libraries, found as the loader finds them: Tinyx's idea).
//! * [`personality`]: builds the Linux personality's image.
#![warn(missing_docs)]

pub mod kernel;
pub mod program_root;
pub mod rootfs;
pub mod unikernel;

/// The Linux personality's image.
pub mod personality {
    use std::path::PathBuf;

    use crate::unikernel::{BuildError, UnikernelBuild};

    /// The personality's source: `crates/personality` of this repository.
    pub fn source_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../personality")
    }

    /// Builds the personality (Cargo does nothing when it is up to date) and
    /// returns its image's path.
    pub fn build() -> Result<PathBuf, BuildError> {
        let build = UnikernelBuild {
            quiet: true,
            ..UnikernelBuild::new(source_dir())
        };
        Ok(build.build()?.path)
    }
}

pub use unikernel::{BuildError, BuiltImage, UnikernelBuild};
