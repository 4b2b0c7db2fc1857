//! Terminal and pseudo-terminal ioctls.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// A terminal's settings as `TCGETS2` gives them.
pub type Termios2 = libc::termios2;

/// Settings with every field zero, to fill in.
pub fn zeroed_termios() -> Termios2 {
    // SAFETY: termios2 is plain data; all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `ioctl(fd, TCGETS2)`. On a pseudo-terminal master it reads the slave's settings.
pub fn get_termios(fd: BorrowedFd<'_>) -> Result<Termios2, Errno> {
    let mut t = zeroed_termios();
    // SAFETY: TCGETS2 writes one struct termios2 through the pointer, valid for that write.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t as *mut Termios2) };
    Errno::result(r)?;
    Ok(t)
}

/// `ioctl(fd, TCSETS2)`: sets the settings at once (no drain, no flush).
pub fn set_termios(fd: BorrowedFd<'_>, t: &Termios2) -> Result<(), Errno> {
    // SAFETY: TCSETS2 reads one struct termios2 through the pointer, valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, t as *const Termios2) };
    Errno::result(r).map(drop)
}

/// `ioctl(fd, TIOCGWINSZ)`: rows, columns, width and height in pixels.
pub fn get_winsize(fd: BorrowedFd<'_>) -> Result<[u16; 4], Errno> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize through the pointer, valid for it.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut libc::winsize,
        )
    };
    Errno::result(r)?;
    Ok([ws.ws_row, ws.ws_col, ws.ws_xpixel, ws.ws_ypixel])
}

/// `ioctl(fd, TIOCSWINSZ)` with rows, columns, width and height in pixels.
pub fn set_winsize(fd: BorrowedFd<'_>, w: [u16; 4]) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: w[0],
        ws_col: w[1],
        ws_xpixel: w[2],
        ws_ypixel: w[3],
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize through the pointer, valid for the call.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    Errno::result(r).map(drop)
}

/// An ioctl that writes one `int`: `TIOCGPTN`, `TIOCGPKT`, `TIOCGPTLCK`, `FIONREAD`.
pub fn get_int(fd: BorrowedFd<'_>, request: libc::Ioctl) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: the requests this is used with write one int through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut v as *mut libc::c_int) };
    Errno::result(r)?;
    Ok(v)
}

/// An ioctl that reads one `int`: `TIOCPKT`, `TIOCSPTLCK`.
pub fn set_int(fd: BorrowedFd<'_>, request: libc::Ioctl, value: i32) -> Result<(), Errno> {
    let v: libc::c_int = value;
    // SAFETY: the requests this is used with read one int through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &v as *const libc::c_int) };
    Errno::result(r).map(drop)
}

/// `ioctl(master, TIOCGPTPEER, flags)`: opens the slave of a pseudo-terminal master.
pub fn open_peer(master: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new descriptor.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    Errno::result(r)?;
    // SAFETY: the descriptor was just created for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `ioctl(fd, TIOCSTI)` for each byte: puts the bytes in the terminal's input queue as if
/// they had arrived, processed at once by its line discipline with its current settings
/// (needs `CAP_SYS_ADMIN` on a terminal that is not the caller's).
pub fn push_input(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), Errno> {
    for b in bytes {
        let c = *b as libc::c_char;
        // SAFETY: TIOCSTI reads one char through the pointer, valid for the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSTI, &c as *const libc::c_char) };
        Errno::result(r)?;
    }
    Ok(())
}
