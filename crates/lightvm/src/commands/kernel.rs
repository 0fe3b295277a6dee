//! `lightvm kernel build`.

use crate::cli::KernelBuildArgs;

pub fn build(_args: &KernelBuildArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
