//! Reading the root filesystem archive: cpio's "newc" format (`070701`), which
//! `lightvm run --rootfs` writes, in place.
//!
//! Written here rather than taken from a crate: the one we used (`cpio_reader`)
//! sums every file's bytes for the CRC variant's checksum even in newc archives,
//! which touches the whole archive at start-up — on a KVM with shadow paging,
//! an exit per page, ~25 ms for a static hello's root. This reader looks at the
//! headers and names only; file contents stay untouched until the program reads
//! them.

/// One member of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its name, as stored (without the terminating NUL).
    pub name: &'a str,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, in seconds since the epoch.
    pub mtime: u32,
    /// Its data (a file's bytes, a link's target).
    pub data: &'a [u8],
}

const MAGIC: &[u8; 6] = b"070701";
const HEADER: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// The members of `archive`, up to its trailer. A malformed member ends the
/// walk (what came before stays): the archive is the user's, read as far as it
/// makes sense.
pub fn entries(archive: &[u8]) -> Entries<'_> {
    Entries { rest: archive }
}

/// See [`entries`].
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
}

/// Field `index` (0-based, after the magic) of a header: 8 hex digits.
fn field(header: &[u8], index: usize) -> Option<u32> {
    let start = MAGIC.len() + index * 8;
    let digits = header.get(start..start + 8)?;
    let text = core::str::from_utf8(digits).ok()?;
    u32::from_str_radix(text, 16).ok()
}

/// `offset` rounded up to the archive's 4-byte alignment.
fn align4(offset: usize) -> Option<usize> {
    offset.checked_add(3).map(|end| end & !3)
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let header = self.rest.get(..HEADER)?;
        if &header[..MAGIC.len()] != MAGIC {
            self.rest = &[];
            return None;
        }
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check.
        let parsed = (|| {
            let mode = field(header, 1)?;
            let uid = field(header, 2)?;
            let gid = field(header, 3)?;
            let mtime = field(header, 5)?;
            let size = usize::try_from(field(header, 6)?).ok()?;
            let name_size = usize::try_from(field(header, 11)?).ok()?;
            // The name ends in a NUL that `name_size` counts.
            let name_end = HEADER.checked_add(name_size)?;
            let name_bytes = self.rest.get(HEADER..name_end.checked_sub(1)?)?;
            let name = core::str::from_utf8(name_bytes).ok()?;
            let data_start = align4(name_end)?;
            let data_end = data_start.checked_add(size)?;
            let data = self.rest.get(data_start..data_end)?;
            let next = align4(data_end)?.min(self.rest.len());
            Some((
                Entry {
                    name,
                    mode,
                    uid,
                    gid,
                    mtime,
                    data,
                },
                next,
            ))
        })();
        match parsed {
            Some((entry, _)) if entry.name == TRAILER => {
                self.rest = &[];
                None
            }
            Some((entry, next)) => {
                self.rest = self.rest.get(next..).unwrap_or(&[]);
                Some(entry)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let header = alloc::format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1, 0, 0, 1, 1_700_000_000u32, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    #[test]
    fn members_come_back_with_their_names_modes_and_bytes_up_to_the_trailer() {
        let mut archive = Vec::new();
        member(&mut archive, "etc", 0o040755, b"");
        member(&mut archive, "etc/hostname", 0o100644, b"lightvm\n");
        member(&mut archive, "bin/sh", 0o120777, b"busybox");
        member(&mut archive, TRAILER, 0, b"");
        member(&mut archive, "after-the-trailer", 0o100644, b"x");
        let found: Vec<_> = entries(&archive)
            .map(|e| (e.name, e.mode, e.data))
            .collect();
        assert_eq!(
            found,
            [
                ("etc", 0o040755, &b""[..]),
                ("etc/hostname", 0o100644, &b"lightvm\n"[..]),
                ("bin/sh", 0o120777, &b"busybox"[..]),
            ]
        );
        assert_eq!(
            entries(&archive).next().map(|e| e.mtime),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn a_truncated_or_foreign_archive_ends_the_walk_without_a_panic() {
        let mut archive = Vec::new();
        member(&mut archive, "a", 0o100644, b"hello");
        member(&mut archive, "b", 0o100644, b"world");
        for cut in 0..archive.len() {
            let _ = entries(&archive[..cut]).count();
        }
        assert_eq!(entries(b"070707 old binary cpio").count(), 0);
        let mut huge = archive.clone();
        // A size field of ffffffff.
        huge[54..62].copy_from_slice(b"ffffffff");
        assert_eq!(entries(&huge).count(), 0);
    }
}
