//! The artifacts the lead fetched back, with the hash of what it wrote.

use serde::Serialize;

use super::Store;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactFetch {
    pub run: i64,
    pub path: String,
    pub description: String,
    pub size: u64,
    pub sha256: String,
    pub local_path: String,
    pub fetched_at: String,
}

impl Store {
    pub fn record_artifact_fetch(&self, task_id: i64, f: &ArtifactFetch) -> Result<()> {
        self.conn.execute(
            "INSERT INTO artifact_fetches (task_id, run_no, path, description, size, sha256, local_path, fetched_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                task_id,
                f.run,
                f.path,
                f.description,
                f.size as i64,
                f.sha256,
                f.local_path,
                f.fetched_at
            ],
        )?;
        Ok(())
    }

    /// Every fetch of the task's artifacts, oldest first.
    pub fn artifact_fetches(&self, task_id: i64) -> Result<Vec<ArtifactFetch>> {
        let mut st = self.conn.prepare(
            "SELECT run_no, path, description, size, sha256, local_path, fetched_at FROM artifact_fetches \
             WHERE task_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([task_id], |r| {
            Ok(ArtifactFetch {
                run: r.get(0)?,
                path: r.get(1)?,
                description: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
                sha256: r.get(4)?,
                local_path: r.get(5)?,
                fetched_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}
