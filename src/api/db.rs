//! The API's storage: one SQLite file (WAL, so replicas in several processes share it; busy
//! timeout; `synchronous = FULL`, so a committed booking survives a crash of every process and a
//! power cut). The schema is created and migrated at start (`schema_version`), the catalog
//! seeded from `seed/dresses.json`. Calls run on blocking threads, never on the async workers,
//! over a small pool of connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

const SEED: &str = include_str!("seed/dresses.json");
const MAX_IDLE: usize = 8;

/// Schema migrations, applied in order; the index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    // 1: catalog and bookings; one booking per (date, slot), enforced here, not by a read first
    "CREATE TABLE dresses (
        id INTEGER PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        collection TEXT NOT NULL,
        designer TEXT NOT NULL,
        silhouette TEXT NOT NULL,
        neckline TEXT NOT NULL,
        fabric TEXT NOT NULL,
        colour TEXT NOT NULL,
        price_eur INTEGER NOT NULL,
        image TEXT NOT NULL,
        description TEXT NOT NULL
    );
    CREATE INDEX dresses_collection ON dresses (collection);
    CREATE TABLE appointments (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        phone TEXT NOT NULL,
        date TEXT NOT NULL,
        slot TEXT NOT NULL,
        dress_id INTEGER REFERENCES dresses (id),
        notes TEXT,
        status TEXT NOT NULL DEFAULT 'confirmed',
        created_at TEXT NOT NULL,
        UNIQUE (date, slot)
    );",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dress {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub collection: String,
    pub designer: String,
    pub silhouette: String,
    pub neckline: String,
    pub fabric: String,
    pub colour: String,
    pub price_eur: i64,
    pub image: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Appointment {
    pub id: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub date: String,
    pub slot: String,
    pub dress_id: Option<i64>,
    pub notes: Option<String>,
    pub status: String,
    pub created_at: String,
}

/// A page of the catalog.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<Dress>,
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
    pub pages: u64,
    pub collections: Vec<String>,
}

#[derive(Debug)]
pub enum BookError {
    /// The (date, slot) is taken.
    Taken,
    Db(String),
}

pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Db {
    /// Opens (creating, migrating and seeding when needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Arc<Db>, String> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let db = Arc::new(Db {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        // Replicas that start together on a new database race to switch it to WAL, which
        // SQLite answers with "database is locked" at once (the busy timeout does not cover
        // it): try again for a few seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match db.connect().and_then(|mut conn| migrate(&mut conn).map(|()| conn)) {
                Ok(conn) => break conn,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("database {}: {e}", path.display())),
            }
        };
        db.put(conn);
        Ok(db)
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` with a connection on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.take().map_err(|e| e.to_string())?;
            let result = f(&mut conn).map_err(|e| e.to_string());
            // a connection that just failed may be broken: don't keep it
            if result.is_ok() {
                db.put(conn);
            }
            result
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// True when the database answers.
    pub async fn healthy(self: &Arc<Self>) -> bool {
        self.run(|c| c.query_row("SELECT count(*) FROM dresses", [], |r| r.get::<_, i64>(0)))
            .await
            .is_ok()
    }

    pub async fn dresses(
        self: &Arc<Self>,
        collection: Option<String>,
        q: Option<String>,
        page: u64,
        per_page: u64,
    ) -> Result<Page, String> {
        self.run(move |c| {
            let pattern = q.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
            let filter = "(?1 IS NULL OR collection = ?1) AND (?2 IS NULL OR
                (name || ' ' || designer || ' ' || silhouette || ' ' || neckline || ' ' || fabric || ' ' ||
                 colour || ' ' || collection || ' ' || description) LIKE ?2 ESCAPE '\\')";
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM dresses WHERE {filter}"),
                params![collection, pattern],
                |r| r.get(0),
            )?;
            let total = total.max(0) as u64;
            let mut stmt = c.prepare(&format!(
                "SELECT id, slug, name, collection, designer, silhouette, neckline, fabric, colour, price_eur,
                        image, description
                 FROM dresses WHERE {filter} ORDER BY id LIMIT ?3 OFFSET ?4"
            ))?;
            let offset = (page - 1).saturating_mul(per_page);
            let items = stmt
                .query_map(params![collection, pattern, per_page as i64, offset as i64], dress_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt =
                c.prepare("SELECT DISTINCT collection FROM dresses ORDER BY min(id) OVER (PARTITION BY collection)")?;
            let mut collections: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            collections.dedup();
            Ok(Page {
                items,
                total,
                page,
                per_page,
                pages: total.div_ceil(per_page),
                collections,
            })
        })
        .await
    }

    pub async fn dress(self: &Arc<Self>, id: i64) -> Result<Option<Dress>, String> {
        self.run(move |c| {
            c.query_row(
                "SELECT id, slug, name, collection, designer, silhouette, neckline, fabric, colour, price_eur,
                        image, description FROM dresses WHERE id = ?1",
                [id],
                dress_row,
            )
            .optional()
        })
        .await
    }

    /// Stores a booking; `Taken` when the slot is already booked (the UNIQUE constraint
    /// decides, so two replicas racing for one slot cannot both win).
    pub async fn book(self: &Arc<Self>, a: Appointment) -> Result<Appointment, BookError> {
        let result = self
            .run(move |c| {
                let r = c.execute(
                    "INSERT INTO appointments (id, name, email, phone, date, slot, dress_id, notes, status, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        a.id,
                        a.name,
                        a.email,
                        a.phone,
                        a.date,
                        a.slot,
                        a.dress_id,
                        a.notes,
                        a.status,
                        a.created_at
                    ],
                );
                match r {
                    Ok(_) => Ok(Ok(a)),
                    Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                        Ok(Err(BookError::Taken))
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        match result {
            Ok(r) => r,
            Err(e) => Err(BookError::Db(e)),
        }
    }

    pub async fn appointment(self: &Arc<Self>, id: String) -> Result<Option<Appointment>, String> {
        self.run(move |c| {
            c.query_row(
                "SELECT id, name, email, phone, date, slot, dress_id, notes, status, created_at
                 FROM appointments WHERE id = ?1",
                [id],
                |r| {
                    Ok(Appointment {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        email: r.get(2)?,
                        phone: r.get(3)?,
                        date: r.get(4)?,
                        slot: r.get(5)?,
                        dress_id: r.get(6)?,
                        notes: r.get(7)?,
                        status: r.get(8)?,
                        created_at: r.get(9)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

fn dress_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Dress> {
    Ok(Dress {
        id: r.get(0)?,
        slug: r.get(1)?,
        name: r.get(2)?,
        collection: r.get(3)?,
        designer: r.get(4)?,
        silhouette: r.get(5)?,
        neckline: r.get(6)?,
        fabric: r.get(7)?,
        colour: r.get(8)?,
        price_eur: r.get(9)?,
        image: r.get(10)?,
        description: r.get(11)?,
    })
}

/// Brings the schema up to date and seeds an empty catalog, in one transaction (two processes
/// starting together serialise on it).
/// SQLite's "busy" or "locked": another connection holds the lock a moment.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: i64 = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [i as i64 + 1])?;
    }
    let count: i64 = tx.query_row("SELECT count(*) FROM dresses", [], |r| r.get(0))?;
    if count == 0 {
        let seed: Vec<Dress> =
            serde_json::from_str(SEED).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        for d in seed {
            tx.execute(
                "INSERT INTO dresses (id, slug, name, collection, designer, silhouette, neckline, fabric, colour,
                                      price_eur, image, description)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    d.id,
                    d.slug,
                    d.name,
                    d.collection,
                    d.designer,
                    d.silhouette,
                    d.neckline,
                    d.fabric,
                    d.colour,
                    d.price_eur,
                    d.image,
                    d.description
                ],
            )?;
        }
    }
    tx.commit()
}
