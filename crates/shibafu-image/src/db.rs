//! Image metadata in redb: image records, `repo:tag` references, layers.
//! Every change of the store is one transaction, so metadata never points
//! half-way into an operation.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// image ID hex => [`ImageRecord`] JSON.
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// familiar `repo:tag` => image ID hex.
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
/// diff ID hex => [`LayerRecord`] JSON. (Stores made before layers were
/// keyed by diff ID keyed them by chain ID, which is the diff ID for the
/// single-layer images they could hold.)
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(String);

fn db_err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// 64 hex, no `sha256:`.
    pub id: String,
    /// Layer diff IDs (hex), lowest first.
    #[serde(alias = "chain_ids")]
    pub layers: Vec<String>,
    /// Sum of the layers' sizes.
    pub size: u64,
    /// RFC 3339, when the image was last tagged.
    #[serde(default)]
    pub last_tag_time: Option<String>,
    /// `familiar-repo@sha256:<hex>`: manifests (or indexes) this image was
    /// pulled by or pushed as (`RepoDigests`).
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Hex digests of the manifest and index blobs kept for this image (the
    /// exact bytes a registry served or was sent).
    #[serde(default)]
    pub manifests: Vec<String>,
    /// RFC 3339 creation time of the record (pull/load/import time).
    #[serde(default)]
    pub stored_at: Option<String>,
}

/// A stored blob holding one layer, in the form it came in or went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDesc {
    /// Hex sha256 of the blob bytes.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Hex digest of the uncompressed layer tar: the layer's key.
    pub diff_id: String,
    /// Sum of regular file sizes.
    pub size: u64,
    /// The blobs stored for this layer (at least one: the pulled or loaded
    /// compressed blob, or the uncompressed tar of an import). Empty in
    /// records of older stores: the uncompressed tar under the diff ID then.
    #[serde(default)]
    pub blobs: Vec<BlobDesc>,
}

impl LayerRecord {
    /// The layer's blobs, the legacy uncompressed one included.
    pub fn blob_list(&self) -> Vec<BlobDesc> {
        if self.blobs.is_empty() {
            vec![BlobDesc {
                digest: self.diff_id.clone(),
                media_type: crate::media::OCI_LAYER_TAR.to_string(),
                size: 0,
            }]
        } else {
            self.blobs.clone()
        }
    }
}

/// One change inside a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    PutImage(ImageRecord),
    DelImage(String),
    PutTag(String, String),
    DelTag(String),
    PutLayer(LayerRecord),
    DelLayer(String),
}

/// Everything the database holds.
#[derive(Debug, Default)]
pub struct Contents {
    pub images: BTreeMap<String, ImageRecord>,
    pub tags: BTreeMap<String, String>,
    pub layers: BTreeMap<String, LayerRecord>,
}

pub struct Meta {
    db: redb::Database,
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, DbError> {
        let db = redb::Database::create(path).map_err(db_err)?;
        // Create the tables so reads never meet a missing one.
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(IMAGES).map_err(db_err)?;
        tx.open_table(TAGS).map_err(db_err)?;
        tx.open_table(LAYERS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Meta { db })
    }

    pub fn load(&self) -> Result<Contents, DbError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let mut c = Contents::default();
        for row in tx
            .open_table(IMAGES)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let rec: ImageRecord = serde_json::from_slice(v.value())
                .map_err(|e| DbError(format!("image record {}: {e}", k.value())))?;
            c.images.insert(k.value().to_string(), rec);
        }
        for row in tx
            .open_table(TAGS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            c.tags.insert(k.value().to_string(), v.value().to_string());
        }
        for row in tx
            .open_table(LAYERS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let rec: LayerRecord = serde_json::from_slice(v.value())
                .map_err(|e| DbError(format!("layer record {}: {e}", k.value())))?;
            c.layers.insert(k.value().to_string(), rec);
        }
        Ok(c)
    }

    /// Applies all `ops` atomically.
    pub fn commit(&self, ops: &[Op]) -> Result<(), DbError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut images = tx.open_table(IMAGES).map_err(db_err)?;
            let mut tags = tx.open_table(TAGS).map_err(db_err)?;
            let mut layers = tx.open_table(LAYERS).map_err(db_err)?;
            for op in ops {
                match op {
                    Op::PutImage(r) => {
                        let v = serde_json::to_vec(r).map_err(db_err)?;
                        images.insert(r.id.as_str(), v.as_slice()).map_err(db_err)?;
                    }
                    Op::DelImage(id) => {
                        images.remove(id.as_str()).map_err(db_err)?;
                    }
                    Op::PutTag(name, id) => {
                        tags.insert(name.as_str(), id.as_str()).map_err(db_err)?;
                    }
                    Op::DelTag(name) => {
                        tags.remove(name.as_str()).map_err(db_err)?;
                    }
                    Op::PutLayer(r) => {
                        let v = serde_json::to_vec(r).map_err(db_err)?;
                        layers
                            .insert(r.diff_id.as_str(), v.as_slice())
                            .map_err(db_err)?;
                    }
                    Op::DelLayer(id) => {
                        layers.remove(id.as_str()).map_err(db_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_records_still_read() {
        let img: ImageRecord =
            serde_json::from_str(r#"{"id":"ab","chain_ids":["cd"],"size":1,"last_tag_time":null}"#)
                .unwrap();
        assert_eq!(img.layers, vec!["cd".to_string()]);
        let l: LayerRecord =
            serde_json::from_str(r#"{"chain_id":"cd","diff_id":"cd","parent":null,"size":1}"#)
                .unwrap();
        assert_eq!(l.blob_list()[0].digest, "cd");
    }

    #[test]
    fn ops_roundtrip_and_persist() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("meta.redb");
        let img = ImageRecord {
            id: "ab".repeat(32),
            layers: vec!["cd".repeat(32)],
            size: 42,
            last_tag_time: None,
            repo_digests: vec![format!("busybox@sha256:{}", "ef".repeat(32))],
            manifests: vec!["ef".repeat(32)],
            stored_at: None,
        };
        let layer = LayerRecord {
            diff_id: "cd".repeat(32),
            size: 42,
            blobs: vec![],
        };
        {
            let m = Meta::open(&path).unwrap();
            m.commit(&[
                Op::PutImage(img.clone()),
                Op::PutLayer(layer.clone()),
                Op::PutTag("busybox:latest".into(), img.id.clone()),
                Op::PutTag("busybox:old".into(), img.id.clone()),
            ])
            .unwrap();
            m.commit(&[Op::DelTag("busybox:old".into())]).unwrap();
        }
        let m = Meta::open(&path).unwrap();
        let c = m.load().unwrap();
        assert_eq!(c.images.get(&img.id), Some(&img));
        assert_eq!(c.layers.get(&layer.diff_id), Some(&layer));
        assert_eq!(c.tags.len(), 1);
        assert_eq!(c.tags["busybox:latest"], img.id);
    }
}
