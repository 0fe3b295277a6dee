//! What to run: `/.lightvm/launch` in the root filesystem archive, written by
//! `lightvm run --rootfs` — the program's path, its arguments, its environment and
//! its working directory, as NUL-separated fields:
//!
//! ```text
//! lightvm-launch-1 \0 EXE \0 CWD \0 ARGC \0 ARG… \0 ENVC \0 ENV… \0
//! ```

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::vfs::{Follow, Kind, Vfs, ROOT};

/// Where the launch file is.
pub const PATH: &str = "/.lightvm/launch";
const MAGIC: &str = "lightvm-launch-1";

/// The program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Its path in the root filesystem.
    pub exe: String,
    /// Its working directory.
    pub cwd: String,
    /// Its arguments, `argv[0]` first.
    pub argv: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
}

/// Reads the launch file from `vfs`.
pub fn read(vfs: &Vfs) -> Result<Launch, String> {
    let ino = vfs.lookup(ROOT, PATH, Follow::Yes).map_err(|_| {
        format!("the root filesystem has no {PATH} (pack it with lightvm run --rootfs)")
    })?;
    let Some(Kind::File(data)) = vfs.node(ino).map(|n| &n.kind) else {
        return Err(format!("{PATH} is not a file"));
    };
    parse(data)
}

/// Parses the launch file's bytes.
pub fn parse(data: &[u8]) -> Result<Launch, String> {
    let text = core::str::from_utf8(data).map_err(|_| format!("{PATH} is not UTF-8"))?;
    let mut fields = text.split('\0');
    let bad = || format!("{PATH} is malformed");
    if fields.next() != Some(MAGIC) {
        return Err(bad());
    }
    let mut next = || fields.next().map(ToString::to_string).ok_or_else(bad);
    let exe = next()?;
    let cwd = next()?;
    let argc: usize = next()?.parse().map_err(|_| bad())?;
    let argv = (0..argc).map(|_| next()).collect::<Result<Vec<_>, _>>()?;
    let envc: usize = next()?.parse().map_err(|_| bad())?;
    let env = (0..envc).map(|_| next()).collect::<Result<Vec<_>, _>>()?;
    if exe.is_empty() || argv.is_empty() {
        return Err(bad());
    }
    Ok(Launch {
        exe,
        cwd,
        argv,
        env,
    })
}
