//! `lightvm rootfs`: a minimal root filesystem for host programs.

use anyhow::Context;
use lightvm_images::program_root::ProgramRoot;

use crate::cli::RootfsArgs;

pub fn rootfs(args: &RootfsArgs) -> anyhow::Result<u8> {
    let mut root = ProgramRoot::new(&args.out)?;
    if !args.no_base {
        root.add_base_files()?;
    }
    let mut files = 0;
    for program in &args.programs {
        let absolute =
            std::path::absolute(program).with_context(|| format!("{}", program.display()))?;
        files += root.add_program(&absolute)?.len();
    }
    for path in &args.add {
        let absolute = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
        root.add_path(&absolute)?;
    }
    eprintln!(
        "lightvm: {} program(s), with the {} loader and library file(s) they need, in {}",
        args.programs.len(),
        files.saturating_sub(args.programs.len()),
        args.out.display()
    );
    Ok(0)
}
