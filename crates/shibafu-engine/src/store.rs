//! The state database (`<data-root>/state.redb`): container records, the
//! names index and volumes, as JSON values. Every write is one transaction
//! so a record and its name never disagree on disk.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::Result;
use crate::model::{ContainerRecord, VolumeRecord};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");

/// Readable records and (id, error) of unreadable ones.
pub type Loaded = (Vec<ContainerRecord>, Vec<(String, String)>);

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)?;
        // Create the tables so readers never see "table does not exist".
        let tx = db.begin_write()?;
        {
            tx.open_table(CONTAINERS)?;
            tx.open_table(NAMES)?;
            tx.open_table(VOLUMES)?;
        }
        tx.commit()?;
        Ok(Store { db })
    }

    /// Insert or replace a record; keeps the names index in step (drops the
    /// old name on rename).
    pub fn put_container(&self, rec: &ContainerRecord) -> Result<()> {
        let json = serde_json::to_vec(rec)?;
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CONTAINERS)?;
            let old = t
                .get(rec.id.as_str())?
                .map(|v| serde_json::from_slice::<ContainerRecord>(v.value()));
            t.insert(rec.id.as_str(), json.as_slice())?;
            let mut names = tx.open_table(NAMES)?;
            if let Some(Ok(old)) = old {
                if old.name != rec.name {
                    names.remove(old.name.as_str())?;
                }
            }
            names.insert(rec.name.as_str(), rec.id.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_container(&self, id: &str, name: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(CONTAINERS)?.remove(id)?;
            let mut names = tx.open_table(NAMES)?;
            let owned = names.get(name)?.map(|v| v.value() == id).unwrap_or(false);
            if owned {
                names.remove(name)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// All records; unreadable ones are returned as errors by ID so start-up
    /// can report (and drop) them.
    pub fn containers(&self) -> Result<Loaded> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CONTAINERS)?;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            match serde_json::from_slice::<ContainerRecord>(v.value()) {
                Ok(r) => ok.push(r),
                Err(e) => bad.push((k.value().to_string(), e.to_string())),
            }
        }
        Ok((ok, bad))
    }

    /// The names index, to reconcile with the records at start-up.
    pub fn names(&self) -> Result<Vec<(String, String)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(NAMES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    pub fn delete_name(&self, name: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(NAMES)?.remove(name)?;
        tx.commit()?;
        Ok(())
    }

    pub fn put_volume(&self, v: &VolumeRecord) -> Result<()> {
        let json = serde_json::to_vec(v)?;
        let tx = self.db.begin_write()?;
        tx.open_table(VOLUMES)?
            .insert(v.name.as_str(), json.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(VOLUMES)?.remove(name)?;
        tx.commit()?;
        Ok(())
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(VOLUMES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            if let Ok(r) = serde_json::from_slice::<VolumeRecord>(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_names_and_rename_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut rec = ContainerRecord {
            id: "a".repeat(64),
            name: "web".into(),
            ..Default::default()
        };
        {
            let s = Store::open(&path).unwrap();
            s.put_container(&rec).unwrap();
            rec.name = "web2".into();
            s.put_container(&rec).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let (recs, bad) = s.containers().unwrap();
        assert!(bad.is_empty());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].name, "web2");
        assert_eq!(
            s.names().unwrap(),
            vec![("web2".to_string(), "a".repeat(64))]
        );
        s.delete_container(&rec.id, &rec.name).unwrap();
        assert!(s.containers().unwrap().0.is_empty());
        assert!(s.names().unwrap().is_empty());
    }

    #[test]
    fn volumes_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let v = VolumeRecord {
            name: "data".into(),
            anonymous: true,
            ..Default::default()
        };
        s.put_volume(&v).unwrap();
        assert_eq!(s.volumes().unwrap(), vec![v]);
        s.delete_volume("data").unwrap();
        assert!(s.volumes().unwrap().is_empty());
    }
}
