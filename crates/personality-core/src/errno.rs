//! Linux error numbers, as the value a failed system call returns (negated).

use core::fmt;

/// A Linux error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u32);

impl Errno {
    /// The system call's return value for this error: `-errno`.
    pub fn to_return(self) -> u64 {
        (-(i64::from(self.0))) as u64
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NAMES.iter().find(|(e, _)| e.0 == self.0) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// `EPERM`.
pub const EPERM: Errno = Errno(linux_raw_sys::errno::EPERM);
/// `ENOENT`.
pub const ENOENT: Errno = Errno(linux_raw_sys::errno::ENOENT);
/// `ESRCH`.
pub const ESRCH: Errno = Errno(linux_raw_sys::errno::ESRCH);
/// `EINTR`.
pub const EINTR: Errno = Errno(linux_raw_sys::errno::EINTR);
/// `EIO`.
pub const EIO: Errno = Errno(linux_raw_sys::errno::EIO);
/// `ENXIO`.
pub const ENXIO: Errno = Errno(linux_raw_sys::errno::ENXIO);
/// `E2BIG`.
pub const E2BIG: Errno = Errno(linux_raw_sys::errno::E2BIG);
/// `ENOEXEC`.
pub const ENOEXEC: Errno = Errno(linux_raw_sys::errno::ENOEXEC);
/// `EBADF`.
pub const EBADF: Errno = Errno(linux_raw_sys::errno::EBADF);
/// `ECHILD`.
pub const ECHILD: Errno = Errno(linux_raw_sys::errno::ECHILD);
/// `EAGAIN`.
pub const EAGAIN: Errno = Errno(linux_raw_sys::errno::EAGAIN);
/// `ENOMEM`.
pub const ENOMEM: Errno = Errno(linux_raw_sys::errno::ENOMEM);
/// `EACCES`.
pub const EACCES: Errno = Errno(linux_raw_sys::errno::EACCES);
/// `EFAULT`.
pub const EFAULT: Errno = Errno(linux_raw_sys::errno::EFAULT);
/// `EBUSY`.
pub const EBUSY: Errno = Errno(linux_raw_sys::errno::EBUSY);
/// `EEXIST`.
pub const EEXIST: Errno = Errno(linux_raw_sys::errno::EEXIST);
/// `EXDEV`.
pub const EXDEV: Errno = Errno(linux_raw_sys::errno::EXDEV);
/// `ENODEV`.
pub const ENODEV: Errno = Errno(linux_raw_sys::errno::ENODEV);
/// `ENOTDIR`.
pub const ENOTDIR: Errno = Errno(linux_raw_sys::errno::ENOTDIR);
/// `EISDIR`.
pub const EISDIR: Errno = Errno(linux_raw_sys::errno::EISDIR);
/// `EINVAL`.
pub const EINVAL: Errno = Errno(linux_raw_sys::errno::EINVAL);
/// `ENFILE`.
pub const ENFILE: Errno = Errno(linux_raw_sys::errno::ENFILE);
/// `EMFILE`.
pub const EMFILE: Errno = Errno(linux_raw_sys::errno::EMFILE);
/// `ENOTTY`.
pub const ENOTTY: Errno = Errno(linux_raw_sys::errno::ENOTTY);
/// `EFBIG`.
pub const EFBIG: Errno = Errno(linux_raw_sys::errno::EFBIG);
/// `ENOSPC`.
pub const ENOSPC: Errno = Errno(linux_raw_sys::errno::ENOSPC);
/// `ESPIPE`.
pub const ESPIPE: Errno = Errno(linux_raw_sys::errno::ESPIPE);
/// `EROFS`.
pub const EROFS: Errno = Errno(linux_raw_sys::errno::EROFS);
/// `EMLINK`.
pub const EMLINK: Errno = Errno(linux_raw_sys::errno::EMLINK);
/// `EPIPE`.
pub const EPIPE: Errno = Errno(linux_raw_sys::errno::EPIPE);
/// `EDOM`.
pub const EDOM: Errno = Errno(linux_raw_sys::errno::EDOM);
/// `ERANGE`.
pub const ERANGE: Errno = Errno(linux_raw_sys::errno::ERANGE);
/// `ENAMETOOLONG`.
pub const ENAMETOOLONG: Errno = Errno(linux_raw_sys::errno::ENAMETOOLONG);
/// `ENOSYS`.
pub const ENOSYS: Errno = Errno(linux_raw_sys::errno::ENOSYS);
/// `ENOTEMPTY`.
pub const ENOTEMPTY: Errno = Errno(linux_raw_sys::errno::ENOTEMPTY);
/// `ELOOP`.
pub const ELOOP: Errno = Errno(linux_raw_sys::errno::ELOOP);
/// `ENODATA`.
pub const ENODATA: Errno = Errno(linux_raw_sys::errno::ENODATA);
/// `ENOTSOCK`.
pub const ENOTSOCK: Errno = Errno(linux_raw_sys::errno::ENOTSOCK);
/// `EDESTADDRREQ`.
pub const EDESTADDRREQ: Errno = Errno(linux_raw_sys::errno::EDESTADDRREQ);
/// `EMSGSIZE`.
pub const EMSGSIZE: Errno = Errno(linux_raw_sys::errno::EMSGSIZE);
/// `EPROTOTYPE`.
pub const EPROTOTYPE: Errno = Errno(linux_raw_sys::errno::EPROTOTYPE);
/// `ENOPROTOOPT`.
pub const ENOPROTOOPT: Errno = Errno(linux_raw_sys::errno::ENOPROTOOPT);
/// `EPROTONOSUPPORT`.
pub const EPROTONOSUPPORT: Errno = Errno(linux_raw_sys::errno::EPROTONOSUPPORT);
/// `ESOCKTNOSUPPORT`.
pub const ESOCKTNOSUPPORT: Errno = Errno(linux_raw_sys::errno::ESOCKTNOSUPPORT);
/// `EOPNOTSUPP`.
pub const EOPNOTSUPP: Errno = Errno(linux_raw_sys::errno::EOPNOTSUPP);
/// `EAFNOSUPPORT`.
pub const EAFNOSUPPORT: Errno = Errno(linux_raw_sys::errno::EAFNOSUPPORT);
/// `EADDRINUSE`.
pub const EADDRINUSE: Errno = Errno(linux_raw_sys::errno::EADDRINUSE);
/// `EADDRNOTAVAIL`.
pub const EADDRNOTAVAIL: Errno = Errno(linux_raw_sys::errno::EADDRNOTAVAIL);
/// `ENETDOWN`.
pub const ENETDOWN: Errno = Errno(linux_raw_sys::errno::ENETDOWN);
/// `ENETUNREACH`.
pub const ENETUNREACH: Errno = Errno(linux_raw_sys::errno::ENETUNREACH);
/// `ECONNABORTED`.
pub const ECONNABORTED: Errno = Errno(linux_raw_sys::errno::ECONNABORTED);
/// `ECONNRESET`.
pub const ECONNRESET: Errno = Errno(linux_raw_sys::errno::ECONNRESET);
/// `ENOBUFS`.
pub const ENOBUFS: Errno = Errno(linux_raw_sys::errno::ENOBUFS);
/// `EISCONN`.
pub const EISCONN: Errno = Errno(linux_raw_sys::errno::EISCONN);
/// `ENOTCONN`.
pub const ENOTCONN: Errno = Errno(linux_raw_sys::errno::ENOTCONN);
/// `ETIMEDOUT`.
pub const ETIMEDOUT: Errno = Errno(linux_raw_sys::errno::ETIMEDOUT);
/// `ECONNREFUSED`.
pub const ECONNREFUSED: Errno = Errno(linux_raw_sys::errno::ECONNREFUSED);
/// `EHOSTUNREACH`.
pub const EHOSTUNREACH: Errno = Errno(linux_raw_sys::errno::EHOSTUNREACH);
/// `EALREADY`.
pub const EALREADY: Errno = Errno(linux_raw_sys::errno::EALREADY);
/// `EINPROGRESS`.
pub const EINPROGRESS: Errno = Errno(linux_raw_sys::errno::EINPROGRESS);

/// Names for traces.
const NAMES: &[(Errno, &str)] = &[
    (EPERM, "EPERM"),
    (ENOENT, "ENOENT"),
    (ESRCH, "ESRCH"),
    (EINTR, "EINTR"),
    (EIO, "EIO"),
    (ENXIO, "ENXIO"),
    (E2BIG, "E2BIG"),
    (ENOEXEC, "ENOEXEC"),
    (EBADF, "EBADF"),
    (ECHILD, "ECHILD"),
    (EAGAIN, "EAGAIN"),
    (ENOMEM, "ENOMEM"),
    (EACCES, "EACCES"),
    (EFAULT, "EFAULT"),
    (EBUSY, "EBUSY"),
    (EEXIST, "EEXIST"),
    (EXDEV, "EXDEV"),
    (ENODEV, "ENODEV"),
    (ENOTDIR, "ENOTDIR"),
    (EISDIR, "EISDIR"),
    (EINVAL, "EINVAL"),
    (ENFILE, "ENFILE"),
    (EMFILE, "EMFILE"),
    (ENOTTY, "ENOTTY"),
    (EFBIG, "EFBIG"),
    (ENOSPC, "ENOSPC"),
    (ESPIPE, "ESPIPE"),
    (EROFS, "EROFS"),
    (EMLINK, "EMLINK"),
    (EPIPE, "EPIPE"),
    (EDOM, "EDOM"),
    (ERANGE, "ERANGE"),
    (ENAMETOOLONG, "ENAMETOOLONG"),
    (ENOSYS, "ENOSYS"),
    (ENOTEMPTY, "ENOTEMPTY"),
    (ELOOP, "ELOOP"),
    (ENODATA, "ENODATA"),
    (ENOTSOCK, "ENOTSOCK"),
    (EDESTADDRREQ, "EDESTADDRREQ"),
    (EMSGSIZE, "EMSGSIZE"),
    (EPROTOTYPE, "EPROTOTYPE"),
    (ENOPROTOOPT, "ENOPROTOOPT"),
    (EPROTONOSUPPORT, "EPROTONOSUPPORT"),
    (ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"),
    (EOPNOTSUPP, "EOPNOTSUPP"),
    (EAFNOSUPPORT, "EAFNOSUPPORT"),
    (EADDRINUSE, "EADDRINUSE"),
    (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (ENETDOWN, "ENETDOWN"),
    (ENETUNREACH, "ENETUNREACH"),
    (ECONNABORTED, "ECONNABORTED"),
    (ECONNRESET, "ECONNRESET"),
    (ENOBUFS, "ENOBUFS"),
    (EISCONN, "EISCONN"),
    (ENOTCONN, "ENOTCONN"),
    (ETIMEDOUT, "ETIMEDOUT"),
    (ECONNREFUSED, "ECONNREFUSED"),
    (EHOSTUNREACH, "EHOSTUNREACH"),
    (EALREADY, "EALREADY"),
    (EINPROGRESS, "EINPROGRESS"),
];
