//! Schema migrations by `PRAGMA user_version`: step N brings a database from version N to N+1.
//! Steps only ever get appended; a database newer than the build is refused, never touched.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

pub(crate) fn apply(conn: &Connection, path: &Path, steps: &[&str]) -> Result<(), StoreError> {
    let known = steps.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (version, step) in steps.iter().enumerate().skip(found as usize) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {step}; PRAGMA user_version = {}; COMMIT;",
            version + 1
        ))?;
    }
    Ok(())
}
