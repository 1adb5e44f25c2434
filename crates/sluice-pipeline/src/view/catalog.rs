//! The views' definitions, kept in the data directory so that every view survives restarts.
//!
//! ```text
//! <dir>/<view>/view.json   its definition: name, id, partition columns, query
//! <dir>/<view>/state/      its state snapshots (see `state`)
//! <dir>/.trash/            views being dropped
//! ```
//!
//! A view is created in a hidden folder, synced, then renamed into place, and dropped by a
//! rename into `.trash/`: after a crash it exists whole or not at all. Its id (64 random bits,
//! never a clock's reading, which can step back) tells its tables from those of an earlier view
//! of the same name. The catalog reads the folder once, when it opens, and keeps the views in
//! memory from then on (it is the folder's only writer): asking it costs no file access.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sluice_sql::ViewDefinition;

use crate::{PipelineError, Result};

/// A view as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredView {
    /// The view's incarnation: a view created again under the same name has another id, and
    /// does not take over the tables of the one before.
    pub id: u64,
    /// When the view was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// The stream or view it reads.
    pub input: String,
    /// The view's name, partition columns and query, as `CREATE MATERIALIZED VIEW` gave them.
    #[serde(flatten)]
    pub definition: ViewDefinition,
}

/// The views of a data directory.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    /// Every view, by name; changed (on disk, then here) one change at a time.
    views: Mutex<BTreeMap<String, StoredView>>,
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
        let mut views = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path().join(DEFINITION);
            let text = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let view: StoredView = serde_json::from_slice(&text)
                .map_err(|e| PipelineError::Internal(format!("{}: {e}", path.display())))?;
            views.insert(view.definition.name.clone(), view);
        }
        Ok(Catalog {
            dir,
            views: Mutex::new(views),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredView>> {
        self.views.lock().expect("catalog lock")
    }

    /// Every view, by name.
    pub fn list(&self) -> Vec<StoredView> {
        self.lock().values().cloned().collect()
    }

    /// The view `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<StoredView> {
        self.lock().get(name).cloned()
    }

    /// The views that read `input` (a stream or a view), by name.
    pub fn reading(&self, input: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|v| v.input == input)
            .map(|v| v.definition.name.clone())
            .collect()
    }

    /// Where the view's state snapshots go.
    pub fn state_dir(&self, view: &StoredView) -> PathBuf {
        self.dir.join(&view.definition.name).join("state")
    }

    /// Records a new view of `input` (a stream or a view); fails if one of that name exists.
    pub fn create(&self, definition: ViewDefinition, input: String) -> Result<StoredView> {
        let mut views = self.lock();
        let name = definition.name.clone();
        sluice_log::validate_name(&name)
            .map_err(|_| PipelineError::Invalid(format!("invalid view name {name:?}")))?;
        let dir = self.dir.join(&name);
        if views.contains_key(&name) || dir.exists() {
            return Err(PipelineError::ViewExists(name));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = StoredView {
            id: sluice_log::new_id()?,
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
        views.insert(name, view.clone());
        Ok(view)
    }

    /// Forgets view `name` and deletes its folder (its state); returns what it was.
    pub fn drop_view(&self, name: &str) -> Result<StoredView> {
        let mut views = self.lock();
        let view = views
            .get(name)
            .cloned()
            .ok_or_else(|| PipelineError::ViewNotFound(name.to_string()))?;
        let trash = self.dir.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(|e| io(&trash, e))?;
        let gone = trash.join(format!("{name}-{}", view.id));
        std::fs::rename(self.dir.join(name), &gone).map_err(|e| io(&gone, e))?;
        views.remove(name);
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
