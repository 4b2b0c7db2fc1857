//! Socket calls `nix` does not wrap: `pidfd_getfd`, socket options as raw bytes (TCP repair
//! structures, `timeval`s, `linger`), queue-size ioctls, a drop-everything socket filter and a
//! `listen` that takes any backlog the kernel accepts.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `SIOCINQ`: bytes in the receive queue.
pub const SIOCINQ: libc::c_ulong = 0x541B;
/// `SIOCOUTQ`: bytes in the send queue (sent but unacknowledged, and unsent).
pub const SIOCOUTQ: libc::c_ulong = 0x5411;
/// `SIOCOUTQNSD`: bytes in the send queue not sent yet.
pub const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of descriptor `fd` of the process behind `pidfd`
/// (the same open file description), close-on-exec.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let new = Errno::result(r)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new as i32) })
}

/// `getsockopt(fd, level, name)` into `buf`; returns the length the kernel wrote.
pub fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let mut len = libc::socklen_t::try_from(buf.len()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `buf` is valid for writes of `len` bytes and `len` is a valid socklen_t the
    // kernel updates.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    Errno::result(r).map(|_| len as usize)
}

/// `setsockopt(fd, level, name, value)` with the value as raw bytes.
pub fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &[u8],
) -> Result<(), Errno> {
    let len = libc::socklen_t::try_from(value.len()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `value` is valid for reads of `len` bytes for the duration of the call.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    Errno::result(r).map(drop)
}

/// `getsockopt` of an `int` option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32, Errno> {
    let mut buf = [0u8; 4];
    getsockopt_bytes(fd, level, name, &mut buf)?;
    Ok(i32::from_ne_bytes(buf))
}

/// `setsockopt` of an `int` option.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> Result<(), Errno> {
    setsockopt_bytes(fd, level, name, &value.to_ne_bytes())
}

/// An `ioctl` that reports an `int` (`SIOCINQ`, `SIOCOUTQ`, `SIOCOUTQNSD`).
pub fn ioctl_int(fd: BorrowedFd<'_>, request: libc::c_ulong) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: the requests used here write one int through the pointer, which is valid.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut v as *mut libc::c_int) };
    Errno::result(r).map(|_| v)
}

/// Attaches a classic BPF socket filter that drops every incoming packet: a TCP segment that
/// reaches the socket is discarded before TCP sees it (no ACK goes out, the peer retransmits).
pub fn attach_drop_filter(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // BPF_RET | BPF_K with k = 0: accept zero bytes, i.e. drop.
    let mut insn = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insn.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `insn`, one valid instruction, both alive during the call; the
    // kernel copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// `listen(fd, backlog)` with any backlog (the kernel caps it at `net.core.somaxconn`).
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    Errno::result(r).map(drop)
}

/// Takes ownership of descriptors the kernel just installed in this process through an
/// `SCM_RIGHTS` control message, so that they are closed.
pub fn adopt_received(fds: &[std::os::fd::RawFd]) -> Vec<OwnedFd> {
    fds.iter()
        // SAFETY: each descriptor was installed by the kernel into our table by the receive
        // that returned it; nothing else knows or owns it.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect()
}

/// `socket(family, ty | SOCK_CLOEXEC, protocol)` with any protocol number (raw, ICMP,
/// UDP-Lite, netlink families), which `nix` does not all name.
pub fn socket(family: i32, ty: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
    let fd = Errno::result(r)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SO_GET_FILTER`: the classic BPF program attached to the socket (8 bytes per instruction,
/// as `struct sock_filter`), empty when none is (or when the filter is an eBPF program, which
/// the kernel does not report).
pub fn get_filter(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    // With a length of 0 the kernel reports the number of instructions in the length.
    let mut count: libc::socklen_t = 0;
    // SAFETY: a zero length: the kernel writes nothing through the null buffer, only `count`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut count,
        )
    };
    Errno::result(r)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut insns = vec![
        libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0
        };
        count as usize
    ];
    // The length is counted in instructions, not bytes, for this option.
    let mut len = count;
    // SAFETY: `insns` holds `count` instructions, which is the length (in instructions) the
    // kernel is told it may write; it writes back how many it wrote.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            insns.as_mut_ptr().cast(),
            &mut len,
        )
    };
    Errno::result(r)?;
    let mut out = Vec::with_capacity(len as usize * INSN);
    for i in insns.iter().take(len as usize) {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    Ok(out)
}

/// `SO_ATTACH_FILTER` of a classic BPF program as [`get_filter`] returns it.
pub fn attach_filter(fd: BorrowedFd<'_>, program: &[u8]) -> Result<(), Errno> {
    let mut insns: Vec<libc::sock_filter> = program
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(insns.len()).map_err(|_| Errno::EINVAL)?,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `insns`, `prog.len` valid instructions, both alive during the
    // call; the kernel copies (and checks) the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// `accept4(listener, NULL, NULL, SOCK_CLOEXEC)`.
pub fn accept(listener: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: null address pointers ask for no peer address; the listener is a valid fd.
    let r = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    let fd = Errno::result(r)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `getsockname` (or `getpeername` when `peer`) of a netlink socket: port id and groups.
pub fn netlink_name(fd: BorrowedFd<'_>, peer: bool) -> Result<(u32, u32), Errno> {
    // SAFETY: sockaddr_nl is plain data; all zeros is a valid value.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_nl).cast();
    // SAFETY: `a` is valid for writes of `len` bytes, which the kernel updates.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    Errno::result(r).map(|_| (a.nl_pid, a.nl_groups))
}

/// `bind` (or `connect` when `connect`) of a netlink socket to port id `pid` and `groups`.
pub fn netlink_address(
    fd: BorrowedFd<'_>,
    pid: u32,
    groups: u32,
    connect: bool,
) -> Result<(), Errno> {
    // SAFETY: sockaddr_nl is plain data; all zeros is a valid value.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_pid = pid;
    a.nl_groups = groups;
    let p = (&a as *const libc::sockaddr_nl).cast();
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `a` is a valid sockaddr_nl of `len` bytes for the duration of the call.
    let r = unsafe {
        if connect {
            libc::connect(fd.as_raw_fd(), p, len)
        } else {
            libc::bind(fd.as_raw_fd(), p, len)
        }
    };
    Errno::result(r).map(drop)
}

/// `getsockname` of a packet socket: the protocol it receives (host order) and the interface
/// index it is bound to (0: every interface).
pub fn packet_name(fd: BorrowedFd<'_>) -> Result<(u16, i32), Errno> {
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_ll).cast();
    // SAFETY: `a` is valid for writes of `len` bytes, which the kernel updates.
    let r = unsafe { libc::getsockname(fd.as_raw_fd(), p, &mut len) };
    Errno::result(r).map(|_| (u16::from_be(a.sll_protocol), a.sll_ifindex))
}

/// `bind` of a packet socket to `protocol` (host order) on interface `ifindex` (0: every
/// interface).
pub fn packet_bind(fd: BorrowedFd<'_>, protocol: u16, ifindex: i32) -> Result<(), Errno> {
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = protocol.to_be();
    a.sll_ifindex = ifindex;
    let p = (&a as *const libc::sockaddr_ll).cast();
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `a` is a valid sockaddr_ll of `len` bytes for the duration of the call.
    let r = unsafe { libc::bind(fd.as_raw_fd(), p, len) };
    Errno::result(r).map(drop)
}
