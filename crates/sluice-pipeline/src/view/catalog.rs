//! The views' definitions, kept so that every view survives restarts: in the data directory of a
//! single Sluice, in the lake for the workers of a cluster.
//!
//! ```text
//! <dir>/<view>/view.json   its definition: name, id, partition columns, query
//! <dir>/<view>/state/      its state snapshots (see `state`)
//! <dir>/.trash/            views being dropped
//!
//! lake/.sluice/cluster-<name>-views/<view>.json    a cluster's: its definition
//! lake/.sluice/cluster-<name>-states/…             their state snapshots
//! ```
//!
//! In the data directory a view is created in a hidden folder, synced, then renamed into place,
//! and dropped by a rename into `.trash/`: after a crash it exists whole or not at all. The
//! catalog reads the folder once, when it opens, and keeps the views in memory from then on (it
//! is the folder's only writer): asking it costs no file access.
//!
//! In the lake a view is created with a conditional put (of two workers creating one name, one
//! is told it exists) and dropped by deleting its document; every worker keeps the views in
//! memory too, and [`Catalog::follow`] makes them the lake's (reading again only documents
//! written anew), so that a view created or dropped on one worker is on every worker within a
//! follow.
//!
//! A view's id (64 random bits, never a clock's reading, which can step back) tells its tables
//! from those of an earlier view of the same name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sluice_lake::{Documents, Lake};
use sluice_sql::ViewDefinition;

use super::input::Input;
use super::pieces::Pieces;
use super::state::Snapshots;
use crate::{PipelineError, Result, blocking};

/// A view as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredView {
    /// The view's incarnation: a view created again under the same name has another id, and
    /// does not take over the tables of the one before.
    pub id: u64,
    /// When the view was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// The stream or view it reads (a join: its first stream).
    pub input: String,
    /// The second stream of a join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
    /// The view's name, partition columns and query, as `CREATE MATERIALIZED VIEW` gave them.
    #[serde(flatten)]
    pub definition: ViewDefinition,
}

impl StoredView {
    /// What it reads, as its status says it: a stream or a view, or the two streams it joins.
    pub fn reads(&self) -> String {
        match &self.joined {
            Some(joined) => format!("{}, {joined}", self.input),
            None => self.input.clone(),
        }
    }
}

/// The views of a data directory, or of a cluster.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    /// Every view, by name; changed (where they are kept, then here) one change at a time.
    views: Mutex<BTreeMap<String, StoredView>>,
}

/// Where a catalog keeps its views.
#[derive(Debug)]
// One a process: the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Store {
    /// A single Sluice's data directory.
    Dir(PathBuf),
    /// A cluster's documents in the lake.
    Lake {
        views: Documents,
        states: Documents,
        pieces: Documents,
        /// The tag of each view's document as last read: only a document written anew is read
        /// again.
        tags: Mutex<HashMap<String, String>>,
    },
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
            store: Store::Dir(dir),
            views: Mutex::new(views),
        })
    }

    /// The catalog of cluster `cluster`'s views, in `lake`: empty until it follows the lake.
    pub fn in_lake(lake: &Lake, cluster: &str) -> Catalog {
        Catalog {
            store: Store::Lake {
                views: lake.documents(&format!("cluster-{cluster}-views")),
                states: lake.files(&format!("cluster-{cluster}-states"), "arrow"),
                pieces: lake.files(&format!("cluster-{cluster}-pieces"), "arrow"),
                tags: Mutex::default(),
            },
            views: Mutex::default(),
        }
    }

    /// Makes the views the lake's (a cluster's catalog; nothing to do in a data directory).
    /// Returns whether they changed.
    pub async fn follow(&self) -> Result<bool> {
        let Store::Lake { views, tags, .. } = &self.store else {
            return Ok(false);
        };
        let listed = views.tags().await?;
        let known = tags.lock().expect("catalog lock").clone();
        let mut read = Vec::new();
        for (name, tag) in &listed {
            if known.get(name) != Some(tag) {
                // Deleted since it was listed: not there.
                if let Some(content) = views.get(name).await? {
                    let view: StoredView = serde_json::from_slice(&content).map_err(|e| {
                        PipelineError::Internal(format!("the definition of view '{name}': {e}"))
                    })?;
                    read.push((tag.clone(), view));
                }
            }
        }
        let listed: HashMap<String, String> = listed.into_iter().collect();
        let mut all = self.lock();
        let before = all.clone();
        all.retain(|name, _| listed.contains_key(name));
        let mut tags = tags.lock().expect("catalog lock");
        tags.retain(|name, _| listed.contains_key(name));
        for (tag, view) in read {
            tags.insert(view.definition.name.clone(), tag);
            all.insert(view.definition.name.clone(), view);
        }
        Ok(*all != before)
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
            .filter(|v| v.input == input || v.joined.as_deref() == Some(input))
            .map(|v| v.definition.name.clone())
            .collect()
    }

    /// Where the view's state snapshots go.
    pub fn snapshots(&self, view: &StoredView) -> Snapshots {
        let name = &view.definition.name;
        match &self.store {
            Store::Dir(dir) => Snapshots::Dir(dir.join(name).join("state")),
            Store::Lake { states, .. } => Snapshots::in_lake(states.clone(), name, view.id),
        }
    }

    /// Where the view's pieces go, in a cluster (`super::spread`).
    pub fn pieces(&self, view: &StoredView) -> Option<Pieces> {
        match &self.store {
            Store::Dir(_) => None,
            Store::Lake { pieces, .. } => {
                Some(Pieces::new(pieces.clone(), &view.definition.name, view.id))
            }
        }
    }

    /// Records a new view of `inputs` (a stream or a view, or the two streams it joins); fails
    /// if one of that name exists.
    pub async fn create(
        &self,
        definition: ViewDefinition,
        inputs: &[&Input],
    ) -> Result<StoredView> {
        let name = definition.name.clone();
        sluice_log::validate_name(&name)
            .map_err(|_| PipelineError::Invalid(format!("invalid view name {name:?}")))?;
        if self.get(&name).is_some() {
            return Err(PipelineError::ViewExists(name));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = StoredView {
            id: sluice_log::new_id()?,
            created_ms: now.as_millis() as u64,
            input: inputs
                .first()
                .map(|i| i.name().to_string())
                .unwrap_or_default(),
            joined: inputs.get(1).map(|i| i.name().to_string()),
            definition,
        };
        match &self.store {
            Store::Dir(dir) => {
                let (dir, stored) = (dir.clone(), view.clone());
                blocking(move || create_in(&dir, &stored)).await?;
            }
            Store::Lake { views, .. } => {
                let json = serde_json::to_vec_pretty(&view)
                    .map_err(|e| PipelineError::Internal(e.to_string()))?;
                if !views.put(&name, json, true).await? {
                    return Err(PipelineError::ViewExists(name));
                }
            }
        }
        self.lock().insert(name, view.clone());
        Ok(view)
    }

    /// Forgets view `name` and deletes its definition (in a data directory, its state too);
    /// returns what it was.
    pub async fn drop_view(&self, name: &str) -> Result<StoredView> {
        let view = self
            .get(name)
            .ok_or_else(|| PipelineError::ViewNotFound(name.to_string()))?;
        match &self.store {
            Store::Dir(dir) => {
                let (dir, gone) = (dir.clone(), view.clone());
                blocking(move || drop_in(&dir, &gone)).await?;
            }
            Store::Lake { views, .. } => {
                views.delete(name).await?;
            }
        }
        self.lock().remove(name);
        Ok(view)
    }
}

/// Writes `view` into the catalog folder `dir`; refuses a name whose folder is there.
fn create_in(dir: &Path, view: &StoredView) -> Result<()> {
    let name = &view.definition.name;
    if dir.join(name).exists() {
        return Err(PipelineError::ViewExists(name.clone()));
    }
    {
        let tmp = dir.join(format!(".{name}.creating"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let path = tmp.join(DEFINITION);
        let json =
            serde_json::to_vec_pretty(view).map_err(|e| PipelineError::Internal(e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| io(&path, e))?;
        sync(&path)?;
        sync(&tmp)?;
        let target = dir.join(name);
        std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
    }
    sync(dir)
}

/// Deletes `view`'s folder from the catalog folder `dir`: renamed into the trash first, so
/// that a crash leaves it whole or gone.
fn drop_in(dir: &Path, view: &StoredView) -> Result<()> {
    let name = &view.definition.name;
    let trash = dir.join(TRASH);
    std::fs::create_dir_all(&trash).map_err(|e| io(&trash, e))?;
    let gone = trash.join(format!("{name}-{}", view.id));
    std::fs::rename(dir.join(name), &gone).map_err(|e| io(&gone, e))?;
    sync(dir)?;
    std::fs::remove_dir_all(&gone).map_err(|e| io(&gone, e))
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
