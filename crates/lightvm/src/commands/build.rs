//! `lightvm build`: a guest application directory in, a bootable image out.

use anyhow::Context;
use lightvm_images::unikernel::UnikernelBuild;
use lightvm_vmm::UnikernelImage;

use crate::cli::BuildArgs;

pub fn build(args: &BuildArgs) -> anyhow::Result<u8> {
    let built = UnikernelBuild {
        release: !args.debug,
        out: args.out.clone(),
        ..UnikernelBuild::new(&args.app_dir)
    }
    .build()?;
    // The VMM's own validation: an image that builds but would not boot is an error
    // now, not at `lightvm run` time.
    let image = UnikernelImage::from_file(&built.path)
        .with_context(|| format!("built image {} is not bootable", built.path.display()))?;
    eprintln!(
        "lightvm: built {} ({} bytes, {} segments, entry {:#x})",
        built.name,
        image.file_size(),
        image.segments().len(),
        image.entry()
    );
    println!("{}", built.path.display());
    Ok(0)
}
