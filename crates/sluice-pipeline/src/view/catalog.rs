//! The views' definitions, kept in the data directory so that every view survives restarts.
//!
//! ```text
//! <dir>/<view>/view.json   its definition: name, id, partition columns, query
//! <dir>/<view>/state/      its state snapshots (see `state`)
//! <dir>/.trash/            views being dropped
//! ```
//!
//! A view is created in a hidden folder, synced, then renamed into place, and dropped by a
//! rename into `.trash/`: after a crash it exists whole or not at all. Its id (the creation
//! time in nanoseconds) tells its tables from those of an earlier view of the same name.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sluice_sql::ViewDefinition;

use crate::{PipelineError, Result};

/// A view as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredView {
    pub id: u64,
    pub created_ms: u64,
    /// The stream or view it reads.
    pub input: String,
    #[serde(flatten)]
    pub definition: ViewDefinition,
}

/// The views of a data directory.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    /// One change at a time.
    ddl: Mutex<()>,
}

const DEFINITION: &str = "view.json";
const TRASH: &str = ".trash";

impl Catalog {
    /// The catalog in `dir` (created if missing); what a crash left in its trash is deleted.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Catalog> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let trash = dir.join(TRASH);
        if trash.exists() {
            std::fs::remove_dir_all(&trash).map_err(|e| io(&trash, e))?;
        }
        Ok(Catalog {
            dir,
            ddl: Mutex::default(),
        })
    }

    /// Every view, by name.
    pub fn list(&self) -> Result<Vec<StoredView>> {
        let mut views = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path().join(DEFINITION);
            let text = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let view: StoredView = serde_json::from_slice(&text)
                .map_err(|e| PipelineError::Internal(format!("{}: {e}", path.display())))?;
            views.push(view);
        }
        views.sort_by(|a, b| a.definition.name.cmp(&b.definition.name));
        Ok(views)
    }

    /// The view `name`, if there is one.
    pub fn get(&self, name: &str) -> Result<Option<StoredView>> {
        Ok(self.list()?.into_iter().find(|v| v.definition.name == name))
    }

    /// Where the view's state snapshots go.
    pub fn state_dir(&self, view: &StoredView) -> PathBuf {
        self.dir.join(&view.definition.name).join("state")
    }

    /// Records a new view of `input` (a stream or a view); fails if one of that name exists.
    pub fn create(&self, definition: ViewDefinition, input: String) -> Result<StoredView> {
        let _ddl = self.ddl.lock().expect("catalog lock");
        let name = definition.name.clone();
        sluice_log::validate_name(&name)
            .map_err(|_| PipelineError::Unsupported(format!("invalid view name {name:?}")))?;
        let dir = self.dir.join(&name);
        if dir.exists() {
            return Err(PipelineError::ViewExists(name));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = StoredView {
            id: now.as_nanos() as u64,
            created_ms: now.as_millis() as u64,
            input,
            definition,
        };
        let tmp = self.dir.join(format!(".{name}.creating"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let path = tmp.join(DEFINITION);
        let json =
            serde_json::to_vec_pretty(&view).map_err(|e| PipelineError::Internal(e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| io(&path, e))?;
        sync(&path)?;
        sync(&tmp)?;
        std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
        sync(&self.dir)?;
        Ok(view)
    }

    /// Forgets view `name` and deletes its folder (its state); returns what it was.
    pub fn drop_view(&self, name: &str) -> Result<StoredView> {
        let _ddl = self.ddl.lock().expect("catalog lock");
        let view = self
            .list()?
            .into_iter()
            .find(|v| v.definition.name == name)
            .ok_or_else(|| PipelineError::ViewNotFound(name.to_string()))?;
        let trash = self.dir.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(|e| io(&trash, e))?;
        let gone = trash.join(format!("{name}-{}", view.id));
        std::fs::rename(self.dir.join(name), &gone).map_err(|e| io(&gone, e))?;
        sync(&self.dir)?;
        std::fs::remove_dir_all(&gone).map_err(|e| io(&gone, e))?;
        Ok(view)
    }
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(path, e))
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}
