//! Where sources are kept: each one's definition, the point its snapshot was copied at, and
//! its tables stopped. A server's directory ([`Directory`]), or a cluster's lake, which every
//! worker reads (the server's).
//!
//! Invariants:
//! - A source exists once its definition is kept: created only if absent ([`Shelf::put`] with
//!   `create`), so that of two creating one name (two workers of a cluster) one is told it
//!   exists.
//! - What is kept is written whole or not at all (a directory's files through a synced
//!   rename, a lake's objects by one put).

use std::io;
use std::path::PathBuf;

use futures::future::BoxFuture;

/// What is kept of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Its definition (never its password).
    Definition,
    /// That Sluice makes its slot: written before the slot is made, so that a slot found
    /// without a finished copy is known to be a copy cut short, not somebody else's slot.
    SlotMade,
    /// The LSN its snapshot was copied at: there once the copy ended.
    SnapshotDone,
    /// Its tables stopped, and why.
    Stopped,
}

/// Where sources are kept.
pub trait Shelf: Send + Sync {
    /// The names of the sources whose definitions are kept.
    fn names(&self) -> BoxFuture<'_, io::Result<Vec<String>>>;

    /// What is kept of `source`, if anything.
    fn get<'a>(&'a self, source: &'a str, kept: Kept)
    -> BoxFuture<'a, io::Result<Option<Vec<u8>>>>;

    /// Keeps `content` as `kept` of `source`: only if nothing is kept there when `create`.
    /// Whether it was written.
    fn put<'a>(
        &'a self,
        source: &'a str,
        kept: Kept,
        content: Vec<u8>,
        create: bool,
    ) -> BoxFuture<'a, io::Result<bool>>;

    /// Forgets `kept` of `source` (nothing if nothing is kept).
    fn forget<'a>(&'a self, source: &'a str, kept: Kept) -> BoxFuture<'a, io::Result<()>>;
}

/// A server's directory: a folder a source, holding `source.json`, `slot.made`,
/// `snapshot.done` and `stopped.json`.
pub struct Directory(pub PathBuf);

impl Directory {
    fn path(&self, source: &str, kept: Kept) -> PathBuf {
        self.0.join(source).join(match kept {
            Kept::Definition => "source.json",
            Kept::SlotMade => "slot.made",
            Kept::SnapshotDone => "snapshot.done",
            Kept::Stopped => "stopped.json",
        })
    }
}

impl Shelf for Directory {
    fn names(&self) -> BoxFuture<'_, io::Result<Vec<String>>> {
        Box::pin(async move {
            let mut names = Vec::new();
            let entries = match std::fs::read_dir(&self.0) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if self.path(&name, Kept::Definition).exists() {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
    }

    fn get<'a>(
        &'a self,
        source: &'a str,
        kept: Kept,
    ) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            match std::fs::read(self.path(source, kept)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn put<'a>(
        &'a self,
        source: &'a str,
        kept: Kept,
        content: Vec<u8>,
        create: bool,
    ) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            let path = self.path(source, kept);
            if create && path.exists() {
                return Ok(false);
            }
            std::fs::create_dir_all(self.0.join(source))?;
            write_synced(&path, &content)?;
            Ok(true)
        })
    }

    fn forget<'a>(&'a self, source: &'a str, kept: Kept) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match std::fs::remove_file(self.path(source, kept)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            // A folder holding nothing more goes with its last file.
            let folder = self.0.join(source);
            if std::fs::read_dir(&folder).is_ok_and(|mut entries| entries.next().is_none()) {
                std::fs::remove_dir(&folder)?;
            }
            Ok(())
        })
    }
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed.
fn write_synced(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
