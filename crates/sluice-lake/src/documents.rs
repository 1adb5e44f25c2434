//! Documents Sluice keeps in the lake beside its tables: small files, one per thing, in folders
//! by kind (JSON: the saved dashboards, a cluster's catalog; Arrow: a cluster's view states).
//!
//! ```text
//! <root>/.sluice/<kind>/<name>.<extension>
//! ```
//!
//! Kept in the lake rather than the data directory so that every Sluice process sharing a lake
//! shares them. `.sluice` can never be a table's folder (a table's name does not start with a
//! dot), and no Delta reader looks inside it. Nothing is cached: each read asks the store, so
//! that what another process wrote is seen at once. A document is written whole in one put
//! (atomic on S3 and on a local folder, where object_store writes a temporary file and renames
//! it), and created with a conditional put, so that of two processes creating one document at
//! once, one is told it exists.

use deltalake::logstore::ObjectStoreRef;
use deltalake::logstore::object_store::path::Path as StorePath;
use deltalake::logstore::object_store::{self, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures::TryStreamExt;

use crate::{Error, Result, valid_table_name};

/// The folder of the lake where documents are kept.
const FOLDER: &str = ".sluice";

/// The documents of one kind (see the module docs).
#[derive(Debug, Clone)]
pub struct Documents {
    store: ObjectStoreRef,
    folder: StorePath,
    /// What every document's file name ends with (`.json`).
    suffix: String,
}

impl Documents {
    pub(crate) fn new(store: ObjectStoreRef, kind: &str, extension: &str) -> Documents {
        Documents {
            store,
            folder: StorePath::from(FOLDER).join(kind),
            suffix: format!(".{extension}"),
        }
    }

    /// Where document `name` is; refuses a name that is not one (as a table's name).
    fn location(&self, name: &str) -> Result<StorePath> {
        if !valid_table_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        Ok(self
            .folder
            .clone()
            .join(format!("{name}{}", self.suffix).as_str()))
    }

    /// Every document, by name, with its content.
    pub async fn list(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut documents = Vec::new();
        for (name, _) in self.tags().await? {
            // Deleted since it was listed: not there.
            if let Some(content) = self.get(&name).await? {
                documents.push((name, content));
            }
        }
        Ok(documents)
    }

    /// Every document's name, sorted, with a tag that changes whenever the document is written
    /// anew (its ETag; its time and size where the store keeps none): one listing, so that
    /// whoever keeps copies reads only what changed.
    pub async fn tags(&self) -> Result<Vec<(String, String)>> {
        let listed: Vec<_> = self.store.list(Some(&self.folder)).try_collect().await?;
        let mut tags: Vec<(String, String)> = listed
            .into_iter()
            .filter_map(|object| {
                let name = object
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(self.suffix.as_str()))
                    .filter(|n| valid_table_name(n))?
                    .to_string();
                let tag = object.e_tag.unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        object.last_modified.timestamp_micros(),
                        object.size
                    )
                });
                Some((name, tag))
            })
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Document `name`, if there is one.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&self.location(name)?).await {
            Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes document `name`: created if `create`, else replaced. Whether it was written: a
    /// document to create that is there already is not.
    pub async fn put(&self, name: &str, content: Vec<u8>, create: bool) -> Result<bool> {
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.location(name)?, PutPayload::from(content), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes document `name`; whether it was there.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let location = self.location(name)?;
        match self.store.head(&location).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}
