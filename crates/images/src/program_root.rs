//! Minimal root filesystems for one program, taken from the host (Tinyx's idea):
//! the program, its dynamic loader and the shared libraries it needs — found as
//! the loader would find them — and nothing else unless asked for.
//!
//! A root made this way holds what `ldd` would list, at the same paths, with the
//! host's symbolic links between them kept (Debian's `/lib -> usr/lib`, the
//! loader's `/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/…`), so the
//! loader inside the guest resolves them exactly as on the host. Configuration
//! and data (`/etc/nginx`, a web root) are added by path. Libraries a program
//! opens itself (`dlopen`) are not visible in its headers; add them by path.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use object::elf::{FileHeader64, DT_NEEDED, DT_RPATH, DT_RUNPATH, EM_X86_64, PT_INTERP};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::Endianness;

/// Largest ELF file the builder reads to find what it needs.
const ELF_MAX_BYTES: u64 = 1 << 30;
/// Where the loader looks when nothing else names a directory: Debian's
/// multiarch directories first, then the classic ones.
const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// Why a root filesystem could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProgramRootError {
    /// A host file could not be read or the root written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The program is not a 64-bit x86 ELF file.
    #[error("{0}: not an x86-64 ELF program")]
    NotX86_64Elf(PathBuf),
    /// Its headers could not be read.
    #[error("{path}: malformed ELF file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A library it needs is nowhere the loader would look.
    #[error("{needed_by}: needs {library}, which is not in {searched}")]
    MissingLibrary {
        /// The library's name (`DT_NEEDED`).
        library: String,
        /// The file that needs it.
        needed_by: PathBuf,
        /// The directories searched.
        searched: String,
    },
    /// A path to add is not absolute.
    #[error("{0}: give an absolute path")]
    NotAbsolute(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ProgramRootError + '_ {
    move |source| ProgramRootError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A root filesystem being filled from the host.
#[derive(Debug)]
pub struct ProgramRoot {
    root: PathBuf,
    /// Host paths already copied (files and links).
    copied: BTreeSet<PathBuf>,
}

impl ProgramRoot {
    /// Starts a root in directory `root` (made if missing; what it holds stays).
    pub fn new(root: &Path) -> Result<ProgramRoot, ProgramRootError> {
        fs::create_dir_all(root).map_err(io_error(root))?;
        Ok(ProgramRoot {
            root: root.to_owned(),
            copied: BTreeSet::new(),
        })
    }

    /// The root's directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Adds the host program at `program` (absolute), with its loader and every
    /// library it needs, transitively; returns the host files added.
    pub fn add_program(&mut self, program: &Path) -> Result<Vec<PathBuf>, ProgramRootError> {
        if !program.is_absolute() {
            return Err(ProgramRootError::NotAbsolute(program.to_owned()));
        }
        let mut added = Vec::new();
        let mut pending = vec![program.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(path) = pending.pop() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let deps = Dependencies::of(&path)?;
            self.copy_path(&path)?;
            added.push(path.clone());
            if let Some(interpreter) = &deps.interpreter {
                pending.push(interpreter.clone());
            }
            let origin = path.parent().unwrap_or(Path::new("/"));
            for library in &deps.needed {
                pending.push(find_library(library, &path, origin, &deps)?);
            }
        }
        Ok(added)
    }

    /// Adds the host file or directory tree at `host` (absolute) at the same path.
    pub fn add_path(&mut self, host: &Path) -> Result<(), ProgramRootError> {
        if !host.is_absolute() {
            return Err(ProgramRootError::NotAbsolute(host.to_owned()));
        }
        let meta = fs::symlink_metadata(host).map_err(io_error(host))?;
        self.copy_path(host)?;
        if meta.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(host)
                .map_err(io_error(host))?
                .collect::<Result<_, _>>()
                .map_err(io_error(host))?;
            entries.sort_by_key(fs::DirEntry::file_name);
            for entry in entries {
                self.add_path(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes `contents` at `inside` (absolute, within the root), making its
    /// directories: configuration made for the guest rather than copied.
    pub fn write_file(&mut self, inside: &Path, contents: &[u8]) -> Result<(), ProgramRootError> {
        let target = self.inside(inside)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        fs::write(&target, contents).map_err(io_error(&target))
    }

    /// Makes directory `inside` (and its parents) within the root.
    pub fn make_dir(&mut self, inside: &Path) -> Result<(), ProgramRootError> {
        let target = self.inside(inside)?;
        fs::create_dir_all(&target).map_err(io_error(&target))
    }

    /// The files most programs read at start-up: who root and nobody are, how
    /// names resolve, and the scratch directories.
    pub fn add_base_files(&mut self) -> Result<(), ProgramRootError> {
        let files: [(&str, &str); 5] = [
            (
                "/etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
            ),
            (
                "/etc/group",
                "root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n",
            ),
            ("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
            ("/etc/hosts", "127.0.0.1 localhost\n"),
            ("/etc/hostname", "lightvm\n"),
        ];
        for (path, contents) in files {
            self.write_file(Path::new(path), contents.as_bytes())?;
        }
        for dir in ["/tmp", "/var/tmp", "/root"] {
            self.make_dir(Path::new(dir))?;
        }
        Ok(())
    }

    /// Where host path `inside` (absolute) lies in the root; `..` is refused.
    fn inside(&self, inside: &Path) -> Result<PathBuf, ProgramRootError> {
        let mut target = self.root.clone();
        for component in inside.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => target.push(name),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(ProgramRootError::NotAbsolute(inside.to_owned()))
                }
            }
        }
        if !inside.is_absolute() {
            return Err(ProgramRootError::NotAbsolute(inside.to_owned()));
        }
        Ok(target)
    }

    /// Copies host `path` into the root at the same path, recreating every
    /// symbolic link met on the way (in its directories and at its end) and
    /// copying what the links lead to.
    fn copy_path(&mut self, path: &Path) -> Result<(), ProgramRootError> {
        let mut host = PathBuf::from("/");
        let components: Vec<_> = path.components().collect();
        let mut links_followed = 0;
        for (index, component) in components.iter().enumerate() {
            let Component::Normal(name) = component else {
                continue;
            };
            host.push(name);
            let meta = fs::symlink_metadata(&host).map_err(io_error(&host))?;
            let last = index + 1 == components.len();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&host).map_err(io_error(&host))?;
                self.copy_link(&host, &target)?;
                links_followed += 1;
                if links_followed > 40 {
                    return Err(ProgramRootError::Io {
                        path: path.to_owned(),
                        source: io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                // Go on from where the link leads, on the host and in the root.
                let resolved = if target.is_absolute() {
                    target
                } else {
                    host.parent().unwrap_or(Path::new("/")).join(target)
                };
                let rest: PathBuf = components[index + 1..].iter().collect();
                return self.copy_path(&normalize(&resolved.join(rest)));
            }
            if last {
                self.copy_entry(&host, &meta)?;
            } else if meta.is_dir() {
                let target = self.inside(&host)?;
                if !target.exists() {
                    fs::create_dir_all(&target).map_err(io_error(&target))?;
                    let mode = fs::Permissions::from_mode(meta.mode() & 0o7777);
                    let _ = fs::set_permissions(&target, mode);
                }
            }
        }
        Ok(())
    }

    fn copy_link(&mut self, host: &Path, target: &Path) -> Result<(), ProgramRootError> {
        if !self.copied.insert(host.to_owned()) {
            return Ok(());
        }
        let link = self.inside(host)?;
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        match fs::symlink_metadata(&link) {
            Ok(_) => Ok(()),
            Err(_) => std::os::unix::fs::symlink(target, &link).map_err(io_error(&link)),
        }
    }

    fn copy_entry(&mut self, host: &Path, meta: &fs::Metadata) -> Result<(), ProgramRootError> {
        if !self.copied.insert(host.to_owned()) {
            return Ok(());
        }
        let target = self.inside(host)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        if meta.is_dir() {
            fs::create_dir_all(&target).map_err(io_error(&target))?;
        } else if meta.is_file() {
            fs::copy(host, &target).map_err(io_error(host))?;
        } else {
            // Devices, FIFOs and sockets: the personality makes its own /dev.
            return Ok(());
        }
        let mode = fs::Permissions::from_mode(meta.mode() & 0o7777);
        fs::set_permissions(&target, mode).map_err(io_error(&target))
    }
}

/// `path` with `.` and `..` taken out (without following links: the caller
/// resolves links one component at a time).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// What an ELF file needs to run: its loader and its libraries.
#[derive(Debug, Default)]
struct Dependencies {
    interpreter: Option<PathBuf>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

impl Dependencies {
    fn of(path: &Path) -> Result<Dependencies, ProgramRootError> {
        let meta = fs::metadata(path).map_err(io_error(path))?;
        if !meta.is_file() || meta.len() > ELF_MAX_BYTES {
            return Err(ProgramRootError::NotX86_64Elf(path.to_owned()));
        }
        let data = fs::read(path).map_err(io_error(path))?;
        let malformed = |error: object::Error| ProgramRootError::Malformed {
            path: path.to_owned(),
            reason: error.to_string(),
        };
        let header = FileHeader64::<Endianness>::parse(&*data)
            .map_err(|_| ProgramRootError::NotX86_64Elf(path.to_owned()))?;
        let endian = header.endian().map_err(malformed)?;
        if header.e_machine(endian) != EM_X86_64 {
            return Err(ProgramRootError::NotX86_64Elf(path.to_owned()));
        }
        let mut deps = Dependencies::default();
        for segment in header.program_headers(endian, &*data).map_err(malformed)? {
            if segment.p_type(endian) == PT_INTERP {
                if let Some(interpreter) = segment.interpreter(endian, &*data).map_err(malformed)? {
                    let text = String::from_utf8_lossy(interpreter).into_owned();
                    deps.interpreter = Some(PathBuf::from(text));
                }
            }
        }
        let sections = header.sections(endian, &*data).map_err(malformed)?;
        if let Some((entries, link)) = sections.dynamic(endian, &*data).map_err(malformed)? {
            let strings = sections.strings(endian, &*data, link).map_err(malformed)?;
            for entry in entries {
                let Ok(tag) = u32::try_from(entry.d_tag(endian)) else {
                    continue;
                };
                if !matches!(tag, DT_NEEDED | DT_RPATH | DT_RUNPATH) {
                    continue;
                }
                let value = entry.string(endian, strings).map_err(malformed)?;
                let text = String::from_utf8_lossy(value).into_owned();
                match tag {
                    DT_NEEDED => deps.needed.push(text),
                    DT_RPATH => deps.rpath.extend(text.split(':').map(str::to_owned)),
                    _ => deps.runpath.extend(text.split(':').map(str::to_owned)),
                }
            }
        }
        Ok(deps)
    }
}

/// Finds `library` as the loader would for `needed_by`: a name with a slash as
/// it is; otherwise `DT_RPATH` (when there is no `DT_RUNPATH`), `DT_RUNPATH`,
/// then the system's directories. `$ORIGIN` is `origin`. Files of another
/// architecture are passed over, as the loader does.
fn find_library(
    library: &str,
    needed_by: &Path,
    origin: &Path,
    deps: &Dependencies,
) -> Result<PathBuf, ProgramRootError> {
    if library.contains('/') {
        return Ok(PathBuf::from(library));
    }
    let origin_text = origin.to_string_lossy();
    let expand = |dir: &String| {
        dir.replace("${ORIGIN}", &origin_text)
            .replace("$ORIGIN", &origin_text)
    };
    let mut dirs: Vec<String> = Vec::new();
    if deps.runpath.is_empty() {
        dirs.extend(deps.rpath.iter().map(expand));
    }
    dirs.extend(deps.runpath.iter().map(expand));
    dirs.extend(system_library_dirs());
    for dir in &dirs {
        let candidate = Path::new(dir).join(library);
        if candidate.is_file() && is_x86_64_elf(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ProgramRootError::MissingLibrary {
        library: library.to_owned(),
        needed_by: needed_by.to_owned(),
        searched: dirs.join(":"),
    })
}

/// The directories of `/etc/ld.so.conf.d/*.conf`, then the defaults.
fn system_library_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/ld.so.conf.d") {
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "conf"))
        {
            let Ok(text) = fs::read_to_string(file) else {
                continue;
            };
            for line in text.lines().map(str::trim) {
                if line.starts_with('/') {
                    dirs.push(line.to_owned());
                }
            }
        }
    }
    dirs.extend(DEFAULT_LIBRARY_DIRS.iter().map(|dir| (*dir).to_owned()));
    dirs
}

fn is_x86_64_elf(path: &Path) -> bool {
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let mut header = [0u8; 20];
    if io::Read::read_exact(&mut file, &mut header).is_err() {
        return false;
    }
    header[..4] == *b"\x7fELF" && header[4] == 2 && header[18..20] == EM_X86_64.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lightvm-root-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_dynamic_program_brings_its_loader_and_libraries_at_their_paths() {
        let dir = temp_root("dyn");
        let mut root = ProgramRoot::new(&dir).unwrap();
        let added = root.add_program(Path::new("/bin/ls")).unwrap();
        // What ldd lists, through the same links.
        let ldd = std::process::Command::new("ldd")
            .arg("/bin/ls")
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(PathBuf::from);
            if let Some(path) = path {
                let inside = dir.join(path.strip_prefix("/").unwrap());
                assert!(
                    inside.exists(),
                    "{} is missing (added: {added:?})",
                    inside.display()
                );
            }
        }
        assert!(dir.join("bin/ls").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_on_the_way_stay_links() {
        let dir = temp_root("links");
        let mut root = ProgramRoot::new(&dir).unwrap();
        root.add_program(Path::new("/bin/ls")).unwrap();
        for path in ["/bin", "/lib", "/lib64"] {
            let host = fs::symlink_metadata(path).unwrap().file_type().is_symlink();
            let inside = fs::symlink_metadata(dir.join(&path[1..]))
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if host && Path::new(path).exists() && dir.join(&path[1..]).exists() {
                assert!(inside, "{path} is a link on the host but not in the root");
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_an_elf_program_is_refused_by_name() {
        let dir = temp_root("notelf");
        let mut root = ProgramRoot::new(&dir).unwrap();
        let error = root.add_program(Path::new("/etc/hostname")).unwrap_err();
        assert!(error.to_string().contains("not an x86-64 ELF"), "{error}");
        let error = root.add_program(Path::new("relative")).unwrap_err();
        assert!(error.to_string().contains("absolute"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn written_files_stay_inside_the_root() {
        let dir = temp_root("inside");
        let mut root = ProgramRoot::new(&dir).unwrap();
        root.write_file(Path::new("/etc/app.conf"), b"x").unwrap();
        assert_eq!(fs::read(dir.join("etc/app.conf")).unwrap(), b"x");
        assert!(root.write_file(Path::new("/../escape"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
