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

/// The environment a program gets when its launcher names none.
pub const DEFAULT_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=dumb",
];

/// The program to run: written by the host's packer ([`Launch::encode`]) and
/// read by the personality ([`parse`]), one type for both ends of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Its path in the root filesystem.
    pub exe: String,
    /// Its working directory.
    pub cwd: String,
    /// Its arguments, `argv[0]` first.
    pub argv: Vec<String>,
    /// Its environment, `KEY=VALUE` each.
    pub env: Vec<String>,
}

impl Launch {
    /// `exe` run with `args` in `cwd`: its `argv[0]` is its file name, as a shell
    /// would give it, and its environment `env`, or [`DEFAULT_ENV`] when `None`.
    pub fn new(exe: &str, args: &[String], env: Option<Vec<String>>, cwd: &str) -> Self {
        let name = exe.rsplit('/').find(|part| !part.is_empty()).unwrap_or(exe);
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(name.to_string());
        argv.extend(args.iter().cloned());
        Self {
            exe: exe.to_string(),
            cwd: cwd.to_string(),
            argv,
            env: env.unwrap_or_else(|| DEFAULT_ENV.iter().map(|v| (*v).to_string()).collect()),
        }
    }

    /// The launch file's bytes. A field holding a NUL cannot be written (the
    /// fields are NUL-separated): it is returned as the error.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let argc = self.argv.len().to_string();
        let envc = self.env.len().to_string();
        let mut fields: Vec<&str> = Vec::from([MAGIC, self.exe.as_str(), self.cwd.as_str()]);
        fields.push(&argc);
        fields.extend(self.argv.iter().map(String::as_str));
        fields.push(&envc);
        fields.extend(self.env.iter().map(String::as_str));
        if let Some(bad) = fields.iter().find(|field| field.contains('\0')) {
            return Err((*bad).to_string());
        }
        let mut bytes = Vec::new();
        for field in fields {
            bytes.extend_from_slice(field.as_bytes());
            bytes.push(0);
        }
        Ok(bytes)
    }
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

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn a_launch_file_holds_each_field_once_and_reads_back_whole() {
        let launch = Launch {
            exe: "/bin/sh".into(),
            cwd: "/".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
        };
        let bytes = launch.encode().unwrap();
        assert_eq!(
            bytes,
            b"lightvm-launch-1\0/bin/sh\0/\x003\0sh\0-c\0echo hi\x001\0PATH=/bin\0"
        );
        assert_eq!(parse(&bytes), Ok(launch));
    }

    #[test]
    fn a_field_with_a_nul_cannot_be_written() {
        let nul = Launch::new("/bin/sh", &["a\0b".into()], None, "/");
        assert_eq!(nul.encode(), Err("a\0b".into()));
    }

    #[test]
    fn a_program_gets_its_file_name_as_argv0_and_the_default_environment() {
        let made = Launch::new("/usr/sbin/nginx", &["-v".into()], None, "/srv");
        assert_eq!(made.argv, ["nginx", "-v"]);
        assert_eq!(made.env.len(), DEFAULT_ENV.len());
        assert_eq!(made.cwd, "/srv");
    }
}
