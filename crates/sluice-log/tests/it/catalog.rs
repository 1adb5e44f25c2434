//! Logs that share their streams through a catalog (cluster mode): a stream is created once
//! the catalog took it, with the same id everywhere, and dropped everywhere once it left it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sluice_log::{Catalog, Error, Log, LogConfig, Retention, StreamMeta, StreamOptions};

/// A catalog in memory; `down` makes every call fail, `elsewhere_only` refuses streams whose
/// records would be the log's.
#[derive(Default)]
struct Memory {
    streams: Mutex<BTreeMap<String, StreamMeta>>,
    down: Mutex<bool>,
}

impl Memory {
    fn up(&self) -> sluice_log::Result<()> {
        match *self.down.lock().unwrap() {
            true => Err(Error::Catalog("unreachable".into())),
            false => Ok(()),
        }
    }
}

impl Catalog for Memory {
    fn claim(&self, meta: &mut StreamMeta) -> sluice_log::Result<()> {
        self.up()?;
        if meta.elsewhere.is_none() {
            return Err(Error::NotShared(format!(
                "stream '{}' would keep its records here",
                meta.name
            )));
        }
        let mut streams = self.streams.lock().unwrap();
        if streams.contains_key(&meta.name) {
            return Err(Error::StreamExists(meta.name.clone()));
        }
        streams.insert(meta.name.clone(), meta.clone());
        Ok(())
    }

    fn redefine(&self, meta: &StreamMeta) -> sluice_log::Result<()> {
        self.up()?;
        let mut streams = self.streams.lock().unwrap();
        match streams.get_mut(&meta.name) {
            Some(had) if had.id == meta.id => *had = meta.clone(),
            _ => return Err(Error::StreamNotFound(meta.name.clone())),
        }
        Ok(())
    }

    fn release(&self, name: &str, id: u64) -> sluice_log::Result<()> {
        self.up()?;
        let mut streams = self.streams.lock().unwrap();
        if streams.get(name).is_some_and(|m| m.id == id) {
            streams.remove(name);
        }
        Ok(())
    }

    fn streams(&self) -> sluice_log::Result<Vec<StreamMeta>> {
        self.up()?;
        Ok(self.streams.lock().unwrap().values().cloned().collect())
    }
}

fn kafka(shards: u32) -> StreamOptions {
    StreamOptions {
        shards,
        retention: Retention::default(),
        definition: serde_json::json!({"columns": []}),
        elsewhere: Some("Kafka topic 'clicks' on 127.0.0.1:9092".into()),
    }
}

#[test]
fn logs_sharing_a_catalog_have_the_same_streams_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Memory::default());
    let open = |name: &str| {
        let log = Log::open(dir.path().join(name), LogConfig::default()).unwrap();
        log.share(catalog.clone());
        log
    };
    let (first, second) = (open("first"), open("second"));

    let created = first.create_stream("clicks", kafka(4)).unwrap();
    assert_eq!(second.follow().unwrap().created, vec!["clicks".to_string()]);
    assert_eq!(second.stream("clicks").unwrap().meta(), created.meta());
    assert!(second.follow().unwrap().nothing(), "nothing more to do");

    // A definition changed anywhere (a column added) reaches every process.
    let columns = serde_json::json!({"columns": [{"name": "a"}]});
    first
        .redefine_stream("clicks", created.id(), columns.clone())
        .unwrap();
    assert_eq!(
        second.follow().unwrap().redefined,
        vec!["clicks".to_string()]
    );
    assert_eq!(second.stream("clicks").unwrap().meta().definition, columns);
    assert!(second.follow().unwrap().nothing());

    // A name another process has is refused, and nothing is created here.
    let refused = second.create_stream("clicks", kafka(2)).err().unwrap();
    assert!(matches!(refused, Error::StreamExists(_)), "{refused}");
    assert_eq!(second.stream("clicks").unwrap().meta().shards, 4);

    // Streams whose records would be one process's own are not shared.
    let local = StreamOptions {
        elsewhere: None,
        ..kafka(1)
    };
    let refused = first.create_stream("local", local).err().unwrap();
    assert!(matches!(refused, Error::NotShared(_)), "{refused}");
    assert!(first.stream("local").is_err());

    // A drop anywhere reaches every process; created again, it is another incarnation.
    second.drop_stream("clicks").unwrap();
    assert!(catalog.streams().unwrap().is_empty());
    assert_eq!(first.follow().unwrap().dropped, vec!["clicks".to_string()]);
    let again = second.create_stream("clicks", kafka(4)).unwrap();
    assert_eq!(first.follow().unwrap().created, vec!["clicks".to_string()]);
    assert_eq!(first.stream("clicks").unwrap().id(), again.id());
    assert_ne!(again.id(), created.id());

    // A catalog that cannot be reached creates and drops nothing.
    *catalog.down.lock().unwrap() = true;
    let unreachable = first.create_stream("views", kafka(1)).err().unwrap();
    assert!(matches!(unreachable, Error::Catalog(_)), "{unreachable}");
    assert!(first.drop_stream("clicks").is_err());
    assert!(first.follow().is_err());
    assert!(first.stream("clicks").is_ok() && first.stream("views").is_err());

    // A process that starts learns every stream.
    *catalog.down.lock().unwrap() = false;
    let third = open("third");
    assert_eq!(third.follow().unwrap().created, vec!["clicks".to_string()]);
    assert_eq!(third.stream("clicks").unwrap().id(), again.id());
}
