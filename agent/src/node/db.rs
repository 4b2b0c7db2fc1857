//! Opening the agent's embedded stores (`records.redb`, `managed.redb`, `web.redb`).
//!
//! A store file is made whole or not at all: a new database is created under a temporary name
//! and renamed into place once redb has written and synced it. An agent killed while it first
//! creates a store (seen: SIGKILL during the first start) then leaves only the temporary file,
//! which the next start removes, instead of a half-written file that no later start can open.

use std::fs;
use std::path::{Path, PathBuf};

use redb::Database;

/// The temporary name a new store is created under, beside its final path.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// Opens the redb file at `path`, creating it (and its directory) atomically when missing.
pub fn open(path: &Path) -> Result<Database, redb::Error> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let new = temporary(path);
        match fs::remove_file(&new) {
            Ok(()) => tracing::info!(path = %new.display(), "removed a store left half-made"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        drop(Database::create(&new)?);
        fs::rename(&new, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(Database::create(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-db-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_half_made_store_left_by_a_killed_agent_is_replaced() {
        let d = dir("half");
        fs::create_dir_all(&d).unwrap();
        let path = d.join("web.redb");
        // What a kill during the first creation leaves: the temporary file, cut short.
        fs::write(temporary(&path), b"redb\x1a\x0a\xa9\x0d\x0a").unwrap();
        let db = open(&path).expect("a store opens over a half-made temporary file");
        drop(db);
        assert!(path.exists());
        assert!(!temporary(&path).exists(), "the half-made file is gone");
        // And it opens again, as a later start would.
        open(&path).expect("the store reopens");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_store_is_refused_not_replaced() {
        let d = dir("bad");
        fs::create_dir_all(&d).unwrap();
        let path = d.join("managed.redb");
        fs::write(
            &path,
            b"not a database at all, but long enough to be read as one",
        )
        .unwrap();
        assert!(
            open(&path).is_err(),
            "a damaged store is refused, not replaced"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            b"not a database at all, but long enough to be read as one"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
