//! Ferry's bridge to CRIU: converts Ferry images to CRIU image directories and back.
//!
//! CRIU keeps a checkpoint as a directory of image files, one per table (`inventory.img`,
//! `pstree.img`, `core-TID.img`, `mm-PID.img`, `pagemap-PID.img` with `pages-N.img`,
//! `files.img`, `fdinfo-ID.img`, `fs-PID.img`, `ids-PID.img`, `sigacts-PID.img`, ...).
//! [`export`] writes such a directory from a Ferry image, [`import`] makes a Ferry image from
//! one, and [`summarize`] describes one. What one side holds and the other cannot express is
//! named in [`Report::losses`]; with `strict` it is an error instead. docs/criu.md has the
//! mapping, table by table.

pub mod export;
mod fdkinds;
pub mod img;
pub mod import;
mod sockopts;
pub mod xsave;
mod pb {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}

use std::path::{Path, PathBuf};

pub use export::{export, export_with_key};
pub use import::{import, summarize};

/// What a conversion could not carry, one line per kind of thing (with where).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    /// Each thing the other side cannot express, named.
    pub losses: Vec<String>,
    /// Files written.
    pub files: Vec<String>,
}

impl Report {
    pub(crate) fn lose(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.losses.contains(&what) {
            self.losses.push(what);
        }
    }
}

/// Errors of the bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CRIU image file is malformed or says something the bridge cannot take.
    #[error("{file}: {msg}")]
    Format {
        /// The file (or table).
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// `--strict`: something could not be expressed on the other side.
    #[error("not expressible on the other side (--strict): {}", .0.join("; "))]
    Strict(Vec<String>),
    /// The Ferry image could not be read.
    #[error("read the Ferry image: {0}")]
    Read(#[from] ferry_agent::image::ReadImageError),
    /// The Ferry image could not be written.
    #[error("write the Ferry image: {0}")]
    Write(#[from] ferry_agent::image::WriteImageError),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Format {
            file: file.into(),
            msg: msg.into(),
        }
    }
}

/// Whether `dir` looks like a CRIU image directory (it holds `inventory.img`).
pub fn is_criu_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join("inventory.img").is_file()
}

/// `fd_types` of CRIU's `fdinfo`/`files` entries.
pub(crate) mod fdtype {
    pub const REG: u32 = 1;
    pub const PIPE: u32 = 2;
    pub const INETSK: u32 = 4;
    pub const UNIXSK: u32 = 5;
    pub const EVENTFD: u32 = 6;
    pub const EVENTPOLL: u32 = 7;
    pub const SIGNALFD: u32 = 9;
    pub const TIMERFD: u32 = 17;
}

/// VMA `status` bits of CRIU.
pub(crate) mod status {
    pub const REGULAR: u32 = 1;
    pub const STACK: u32 = 1 << 1;
    pub const VSYSCALL: u32 = 1 << 2;
    pub const VDSO: u32 = 1 << 3;
    pub const HEAP: u32 = 1 << 5;
    pub const FILE_PRIVATE: u32 = 1 << 6;
    pub const FILE_SHARED: u32 = 1 << 7;
    pub const ANON_SHARED: u32 = 1 << 8;
    pub const ANON_PRIVATE: u32 = 1 << 9;
    pub const SYSVIPC: u32 = 1 << 10;
    pub const VVAR: u32 = 1 << 12;
    pub const AIORING: u32 = 1 << 13;
    pub const MEMFD: u32 = 1 << 14;
}

/// `pagemap_entry.flags`: the pages are in `pages-N.img`.
pub(crate) const PE_PRESENT: u32 = 1 << 2;

/// The `madv` bit (`1 << MADV_*`) of each Ferry VMA flag CRIU keeps there.
pub(crate) const MADV_BITS: [(u32, u32); 8] = [
    (ferry_agent::state::vmflag::DONTFORK, 10),
    (ferry_agent::state::vmflag::DONTDUMP, 16),
    (ferry_agent::state::vmflag::WIPEONFORK, 18),
    (ferry_agent::state::vmflag::HUGEPAGE, 14),
    (ferry_agent::state::vmflag::NOHUGEPAGE, 15),
    (ferry_agent::state::vmflag::MERGEABLE, 12),
    (ferry_agent::state::vmflag::SEQ_READ, 2),
    (ferry_agent::state::vmflag::RAND_READ, 1),
];

pub(crate) const MAP_SHARED: u32 = 0x01;
pub(crate) const MAP_PRIVATE: u32 = 0x02;
pub(crate) const MAP_ANONYMOUS: u32 = 0x20;
pub(crate) const MAP_GROWSDOWN: u32 = 0x100;
pub(crate) const MAP_LOCKED: u32 = 0x2000;
pub(crate) const MAP_NORESERVE: u32 = 0x4000;
