//! Root filesystems for Linux programs: a directory packed into the cpio (newc)
//! archive the Linux personality unpacks, with the launch file that says what to
//! run (`/.lightvm/launch`).
//!
//! The archive is what the monitor maps into guest memory as the VM's module, so
//! packing is a walk of the directory with no compression: symbolic links stay
//! links, files are copied whole, devices, FIFOs and sockets are left out (the
//! personality makes its own `/dev`). Owners and modes are kept.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What the personality runs, written into the archive as `/.lightvm/launch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program's path inside the root filesystem.
    pub exe: String,
    /// Its working directory.
    pub cwd: String,
    /// Its arguments, `argv[0]` first.
    pub argv: Vec<String>,
    /// Its environment, `KEY=VALUE` each.
    pub env: Vec<String>,
}

impl Launch {
    /// The launch file's bytes (the personality's `launch` module reads them).
    pub fn encode(&self) -> Result<Vec<u8>, RootfsError> {
        let mut fields: Vec<&str> = vec!["lightvm-launch-1", &self.exe, &self.cwd];
        let argc = self.argv.len().to_string();
        let envc = self.env.len().to_string();
        fields.push(&argc);
        fields.extend(self.argv.iter().map(String::as_str));
        fields.push(&envc);
        fields.extend(self.env.iter().map(String::as_str));
        if let Some(bad) = fields.iter().find(|field| field.contains('\0')) {
            return Err(RootfsError::Nul((*bad).to_owned()));
        }
        let mut bytes = Vec::new();
        for field in fields {
            bytes.extend_from_slice(field.as_bytes());
            bytes.push(0);
        }
        Ok(bytes)
    }
}

/// Why a root filesystem could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The directory is missing or unreadable.
    #[error("root filesystem {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The archive could not be written.
    #[error("writing the root filesystem archive {path}: {source}")]
    Write {
        /// The archive.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A path or argument holds a NUL byte, which no Linux string can.
    #[error("{0:?} holds a NUL byte")]
    Nul(String),
    /// The program is not in the root filesystem.
    #[error("{exe} is not a file in the root filesystem {root}")]
    NoProgram {
        /// The program's path.
        exe: String,
        /// The root filesystem.
        root: PathBuf,
    },
}

/// Packs `root` and `launch` into a cpio archive at `out`; returns its size.
pub fn pack(root: &Path, launch: &Launch, out: &Path) -> Result<u64, RootfsError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| RootfsError::Read { path, source }
    };
    let inside = root.join(launch.exe.trim_start_matches('/'));
    let target = fs::metadata(&inside).map_err(|_| RootfsError::NoProgram {
        exe: launch.exe.clone(),
        root: root.to_owned(),
    })?;
    if !target.is_file() {
        return Err(RootfsError::NoProgram {
            exe: launch.exe.clone(),
            root: root.to_owned(),
        });
    }
    let write = |source| RootfsError::Write {
        path: out.to_owned(),
        source,
    };
    let file = File::create(out).map_err(write)?;
    let mut archive = Archive {
        out: BufWriter::new(file),
        inode: 1,
    };
    let meta = fs::symlink_metadata(root).map_err(read(root))?;
    archive.entry(".", &meta, &[]).map_err(write)?;
    walk(root, root, &mut archive)?;
    let launch_bytes = launch.encode()?;
    archive
        .synthetic(".lightvm", 0o040755, &[])
        .and_then(|()| archive.synthetic(".lightvm/launch", 0o100444, &launch_bytes))
        .and_then(|()| archive.synthetic("TRAILER!!!", 0, &[]))
        .map_err(write)?;
    let mut out_file = archive
        .out
        .into_inner()
        .map_err(|e| write(e.into_error()))?;
    out_file.flush().map_err(write)?;
    out_file.metadata().map(|m| m.len()).map_err(write)
}

fn walk(root: &Path, dir: &Path, archive: &mut Archive) -> Result<(), RootfsError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| RootfsError::Read { path, source }
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(read(dir))?
        .collect::<Result<_, _>>()
        .map_err(read(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(read(&path))?;
        let name = path
            .strip_prefix(root)
            .map_err(|_| RootfsError::Nul(path.display().to_string()))?
            .to_string_lossy()
            .into_owned();
        let file_type = meta.file_type();
        let write = |source| RootfsError::Write {
            path: path.clone(),
            source,
        };
        if file_type.is_dir() {
            archive.entry(&name, &meta, &[]).map_err(write)?;
            walk(root, &path, archive)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(read(&path))?;
            let target = target.to_string_lossy().into_owned();
            archive
                .entry(&name, &meta, target.as_bytes())
                .map_err(write)?;
        } else if file_type.is_file() {
            let data = fs::read(&path).map_err(read(&path))?;
            archive.entry(&name, &meta, &data).map_err(write)?;
        }
    }
    Ok(())
}

/// A cpio "newc" writer.
struct Archive {
    out: BufWriter<File>,
    inode: u32,
}

impl Archive {
    fn entry(&mut self, name: &str, meta: &fs::Metadata, data: &[u8]) -> io::Result<()> {
        let mtime = u32::try_from(meta.mtime()).unwrap_or(0);
        self.header(name, meta.mode(), (meta.uid(), meta.gid()), mtime, data)
    }

    fn synthetic(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, mode, (0, 0), 0, data)
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        (uid, gid): (u32, u32),
        mtime: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name} is larger than 4 GiB")))?;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{mode:08x}{uid:08x}{gid:08x}{:08x}{mtime:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            self.inode, 1, 0, 0, 0, 0, 0
        );
        self.inode += 1;
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..padding])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_files_encode_each_field_once() {
        let launch = Launch {
            exe: "/bin/sh".into(),
            cwd: "/".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
        };
        let bytes = launch.encode().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "lightvm-launch-1\0/bin/sh\0/\x003\0sh\0-c\0echo hi\x001\0PATH=/bin\0"
        );
        let nul = Launch {
            argv: vec!["a\0b".into()],
            ..launch
        };
        assert!(matches!(nul.encode(), Err(RootfsError::Nul(_))));
    }

    #[test]
    fn a_directory_packs_into_newc_entries() {
        let dir = std::env::temp_dir().join(format!("lightvm-rootfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/prog"), b"ELF?").unwrap();
        std::os::unix::fs::symlink("prog", dir.join("bin/alias")).unwrap();
        let launch = Launch {
            exe: "/bin/prog".into(),
            cwd: "/".into(),
            argv: vec!["prog".into()],
            env: vec![],
        };
        let out = dir.with_extension("cpio");
        let size = pack(&dir, &launch, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(&bytes[..6], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        for name in ["bin/prog", "bin/alias", ".lightvm/launch", "TRAILER!!!"] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(matches!(
            pack(
                &dir,
                &Launch {
                    exe: "/bin/missing".into(),
                    ..launch
                },
                &out
            ),
            Err(RootfsError::NoProgram { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_file(&out).unwrap();
    }
}
