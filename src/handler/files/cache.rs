//! The in-memory file cache (like nginx's `open_file_cache`, but holding the bytes): files up to
//! `max_file_size` with their metadata and compressed variants, as `Bytes` shared by every
//! response, bounded by `max_size` in bytes (moka, weighed by size). A file changed or removed
//! on disk is dropped at once (inotify on the roots, via notify) and, should an event be missed,
//! re-checked against its mtime and size at most a second later.
//!
//! Hits are answered from a plain hash map in front of moka (a read lock and one hash, where
//! moka's own read path costs its admission bookkeeping on every call): the front holds only
//! what moka holds, every removal from moka (eviction, replacement, invalidation) removes the
//! entry from the front too, and one hit in `TOUCH_EVERY` is reported to moka so that its
//! eviction order still sees which files are hot.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use moka::sync::Cache;
use notify::{RecursiveMode, Watcher};
use tokio::sync::OnceCell;

use crate::config::{CacheSettings, Encoding};
use crate::middleware::compression;
use crate::zerocopy;

/// One hit in this many served from the front is also reported to moka (recency).
const TOUCH_EVERY: u32 = 32;

/// How long a cached entry is trusted without looking at the disk, should inotify miss a change.
const REVALIDATE_AFTER: Duration = Duration::from_secs(1);

/// What a response needs to know about a file, cached or not.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub len: u64,
    pub mtime: SystemTime,
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    pub content_type: HeaderValue,
}

impl FileMeta {
    pub fn new(path: &Path, md: &fs::Metadata) -> Self {
        let mtime = md.modified().unwrap_or(UNIX_EPOCH);
        let nanos = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self {
            len: md.len(),
            mtime,
            etag: HeaderValue::from_str(&format!("\"{nanos:x}-{:x}\"", md.len()))
                .unwrap_or(HeaderValue::from_static("\"0\"")),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(mtime))
                .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
            content_type: content_type(path),
        }
    }

    /// Same file as far as a stat can tell.
    fn same_as(&self, md: &fs::Metadata) -> bool {
        md.len() == self.len && md.modified().ok() == Some(self.mtime)
    }
}

/// `Content-Type` from the extension; text gets `charset=utf-8`.
fn content_type(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "image/svg+xml"
                | "application/manifest+json"
        );
    let value = if text {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// A cached file: its bytes, metadata, and compressed variants computed at most once.
pub struct CachedFile {
    pub body: Bytes,
    pub meta: FileMeta,
    variants: [OnceCell<Option<Bytes>>; 2],
    checked_ms: AtomicU64,
    front_hits: AtomicU32,
}

impl CachedFile {
    fn slot(enc: Encoding) -> usize {
        match enc {
            Encoding::Brotli => 0,
            Encoding::Gzip => 1,
        }
    }

    fn weight(&self) -> u32 {
        let variants: usize = self
            .variants
            .iter()
            .filter_map(|v| v.get())
            .flatten()
            .map(Bytes::len)
            .sum();
        (self.body.len() + variants + 512).min(u32::MAX as usize) as u32
    }
}

/// The map in front of moka for hits. `generation` moves on every removal, so that an entry
/// copied from moka while it was being removed is not left behind in the front.
#[derive(Default)]
/// Keyed by the path's bytes (hashing a `Path` walks its components): every key is spelled
/// the same way, a canonical root joined with a normalised request path, as are the paths
/// that change events and moka's removals name.
struct Front {
    map: RwLock<FrontMap>,
    generation: AtomicU64,
}

fn key(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

type FrontMap = HashMap<Box<[u8]>, Arc<CachedFile>, foldhash::fast::RandomState>;

impl Front {
    fn get(&self, path: &Path) -> Option<Arc<CachedFile>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key(path))
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FrontMap> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, path: &Path, entry: Arc<CachedFile>) {
        self.write().insert(key(path).into(), entry);
    }

    fn remove(&self, path: &Path) {
        self.generation.fetch_add(1, SeqCst);
        self.write().remove(key(path));
    }

    fn remove_below(&self, prefix: &Path) {
        self.generation.fetch_add(1, SeqCst);
        use std::os::unix::ffi::OsStrExt;
        self.write()
            .retain(|k, _| !Path::new(std::ffi::OsStr::from_bytes(k)).starts_with(prefix));
    }

    fn clear(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.write().clear();
    }
}

/// What loading a path found.
pub enum Lookup {
    Cached(Arc<CachedFile>),
    /// Too large to cache: stream it from this open file.
    Large(fs::File, FileMeta),
    /// A directory: the caller may redirect to the path with a trailing slash.
    Directory,
    NotFound,
}

pub struct FileCache {
    entries: Cache<PathBuf, Arc<CachedFile>>,
    front: Arc<Front>,
    pub settings: CacheSettings,
    hits: AtomicU64,
    misses: AtomicU64,
    epoch: Instant,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    watched: Mutex<HashSet<PathBuf>>,
}

impl FileCache {
    pub fn new(settings: CacheSettings) -> Arc<Self> {
        let front = Arc::new(Front::default());
        let removed = front.clone();
        let entries: Cache<PathBuf, Arc<CachedFile>> = Cache::builder()
            .max_capacity(settings.max_size)
            .weigher(|_k: &PathBuf, v: &Arc<CachedFile>| v.weight())
            .support_invalidation_closures()
            .eviction_listener(move |k: Arc<PathBuf>, _v, _cause| removed.remove(&k))
            .build();
        let (for_events, front_events) = (entries.clone(), front.clone());
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // our own reads show up as access events: only changes matter
            Ok(ev) if !ev.kind.is_access() => {
                for p in &ev.paths {
                    invalidate_path(&for_events, &front_events, p);
                }
            }
            Ok(_) => {}
            // lost events (queue overflow): drop everything rather than risk stale files
            Err(_) => {
                for_events.invalidate_all();
                front_events.clear();
            }
        })
        .map_err(|e| {
            tracing::warn!("file change notifications unavailable ({e}); cached files are re-checked every second")
        })
        .ok();
        Arc::new(Self {
            entries,
            front,
            settings,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            epoch: Instant::now(),
            watcher: Mutex::new(watcher),
            watched: Mutex::new(HashSet::new()),
        })
    }

    /// Watches `roots` (recursively) for changes; roots no longer listed stop being watched.
    pub fn watch_roots(&self, roots: &[PathBuf]) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = watcher.as_mut() else { return };
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashSet<PathBuf> = roots.iter().cloned().collect();
        for old in watched.difference(&wanted) {
            let _ = w.unwatch(old);
        }
        for new in wanted.difference(&watched) {
            if let Err(e) = w.watch(new, RecursiveMode::Recursive) {
                tracing::warn!(root = %new.display(), "cannot watch for file changes ({e}); re-checking every second");
            }
        }
        *watched = wanted;
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Relaxed)
    }

    /// Bytes held (bodies and variants), after pending evictions.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The cached file at `path` when present and still current.
    pub fn get(&self, path: &Path) -> Option<Arc<CachedFile>> {
        let entry = match self.front.get(path) {
            Some(entry) => {
                if entry.front_hits.fetch_add(1, Relaxed) % TOUCH_EVERY == 0 {
                    let _ = self.entries.get(path);
                }
                entry
            }
            None => {
                let generation = self.front.generation.load(SeqCst);
                let entry = self.entries.get(path)?;
                self.front.insert(path, entry.clone());
                if self.front.generation.load(SeqCst) != generation {
                    // removed from moka meanwhile: don't keep it in the front
                    self.front.write().remove(key(path));
                }
                entry
            }
        };
        let now = self.now_ms();
        if now.saturating_sub(entry.checked_ms.load(Relaxed)) >= REVALIDATE_AFTER.as_millis() as u64 {
            // a stat at most once a second per file, in case a change notification was missed
            match fs::metadata(path) {
                Ok(md) if entry.meta.same_as(&md) => entry.checked_ms.store(now, Relaxed),
                _ => {
                    self.entries.invalidate(path);
                    self.front.remove(path);
                    return None;
                }
            }
        }
        self.hits.fetch_add(1, Relaxed);
        Some(entry)
    }

    /// Loads `path` from disk (blocking: call from a blocking thread). `root` is the
    /// canonical root: anything whose real path leaves it is not found.
    pub fn load(&self, path: &Path, root: &Path) -> Lookup {
        self.misses.fetch_add(1, Relaxed);
        let Ok(real) = fs::canonicalize(path) else {
            return Lookup::NotFound;
        };
        if !real.starts_with(root) {
            tracing::warn!(path = %path.display(), "refused: resolves outside the route's root");
            return Lookup::NotFound;
        }
        let Ok(md) = fs::metadata(&real) else {
            return Lookup::NotFound;
        };
        if md.is_dir() {
            return Lookup::Directory;
        }
        if !md.is_file() {
            return Lookup::NotFound;
        }
        let meta = FileMeta::new(path, &md);
        let read_started = std::time::SystemTime::now();
        let Ok(mut file) = fs::File::open(&real) else {
            return Lookup::NotFound;
        };
        if md.len() > self.settings.max_file_size {
            return Lookup::Large(file, meta);
        }
        let mut buf = Vec::with_capacity(md.len() as usize);
        if file.read_to_end(&mut buf).is_err() {
            return Lookup::NotFound;
        }
        let body = if buf.len() < zerocopy::MAP_MIN {
            Bytes::from(buf)
        } else {
            zerocopy::seal_file("orta-file", &buf, &file, read_started).unwrap_or_else(|e| {
                tracing::debug!("cached file kept on the heap: {e}");
                Bytes::from(buf)
            })
        };
        let entry = CachedFile {
            body,
            variants: [
                sibling(&real, Encoding::Brotli, &md, root),
                sibling(&real, Encoding::Gzip, &md, root),
            ],
            meta,
            checked_ms: AtomicU64::new(self.now_ms()),
            front_hits: AtomicU32::new(1),
        };
        let entry = Arc::new(entry);
        self.entries.insert(path.to_path_buf(), entry.clone());
        Lookup::Cached(entry)
    }

    /// The `enc` variant of a cached file, compressed once (off the async workers) and kept.
    pub async fn variant(&self, path: &Path, entry: &Arc<CachedFile>, enc: Encoding) -> Option<Bytes> {
        let cell = &entry.variants[CachedFile::slot(enc)];
        if let Some(v) = cell.get() {
            return v.clone();
        }
        let body = entry.body.clone();
        let v = cell
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    compression::compress_bytes(&body, enc, compression::Effort::Once).map(keep)
                })
                .await
                .ok()
                .flatten()
            })
            .await
            .clone();
        // weigh it again with its new variant (unless it was replaced meanwhile)
        if self.entries.get(path).is_some_and(|e| Arc::ptr_eq(&e, entry)) {
            self.entries.insert(path.to_path_buf(), entry.clone());
        }
        v
    }
}

/// A body to cache: large ones in a sealed memory file, so plain-HTTP connections can send
/// them with `sendfile` (kept on the heap if that is not possible).
fn keep(data: impl Into<Bytes>) -> Bytes {
    let data = data.into();
    if data.len() < zerocopy::MAP_MIN {
        return data;
    }
    zerocopy::seal("orta-file", &data).unwrap_or_else(|e| {
        tracing::debug!("cached file kept on the heap: {e}");
        data
    })
}

/// A precompressed sibling (`file.br`, `file.gz`) at least as new as the file, inside the root.
fn sibling(real: &Path, enc: Encoding, md: &fs::Metadata, root: &Path) -> OnceCell<Option<Bytes>> {
    let mut name = real.as_os_str().to_owned();
    name.push(".");
    name.push(enc.extension());
    let path = PathBuf::from(name);
    let found = (|| {
        let sib_real = fs::canonicalize(&path).ok()?;
        if !sib_real.starts_with(root) {
            return None;
        }
        let smd = fs::metadata(&sib_real).ok()?;
        if !smd.is_file() || smd.modified().ok()? < md.modified().ok()? {
            return None;
        }
        fs::read(&sib_real).ok().map(keep)
    })();
    match found {
        Some(b) => OnceCell::new_with(Some(Some(b))),
        None => OnceCell::new(),
    }
}

/// Drops what an event on `p` may have changed: the file, a file whose precompressed sibling
/// it is, and anything below it if it is (or was) a directory.
fn invalidate_path(entries: &Cache<PathBuf, Arc<CachedFile>>, front: &Front, p: &Path) {
    entries.invalidate(p);
    front.remove(p);
    if let Some(ext) = p.extension().and_then(|e| e.to_str())
        && (ext == "br" || ext == "gz")
    {
        entries.invalidate(&p.with_extension(""));
        front.remove(&p.with_extension(""));
    }
    // a directory (or something gone, which may have been one): everything below it
    if !p.is_file() {
        // at once in the front; moka applies its invalidation closures lazily
        front.remove_below(p);
        let prefix = p.to_path_buf();
        let _ = entries.invalidate_entries_if(move |k, _| k.starts_with(&prefix) && k != &prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a.html")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(
            content_type(Path::new("a.js")).to_str().unwrap(),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.json")), "application/json; charset=utf-8");
        assert_eq!(content_type(Path::new("a.svg")), "image/svg+xml; charset=utf-8");
        assert_eq!(content_type(Path::new("a.jpg")), "image/jpeg");
        assert_eq!(content_type(Path::new("a.webp")), "image/webp");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn the_front_never_outlives_moka() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let cache = FileCache::new(CacheSettings::default());
        let p = root.join("a.txt");
        fs::write(&p, "one").unwrap();
        assert!(matches!(cache.load(&p, &root), Lookup::Cached(_)));
        assert_eq!(&cache.get(&p).unwrap().body[..], b"one");
        assert!(cache.front.get(&p).is_some(), "a hit fills the front");
        // replaced in moka (a reload from disk): the front follows
        fs::write(&p, "two").unwrap();
        assert!(matches!(cache.load(&p, &root), Lookup::Cached(_)));
        assert_eq!(&cache.get(&p).unwrap().body[..], b"two");
        // invalidated (a change event): gone from both
        invalidate_path(&cache.entries, &cache.front, &p);
        assert!(cache.get(&p).is_none());
        // a directory event drops everything below it from the front at once
        let sub = root.join("d");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("b.txt"), "b").unwrap();
        assert!(matches!(cache.load(&sub.join("b.txt"), &root), Lookup::Cached(_)));
        assert!(cache.get(&sub.join("b.txt")).is_some());
        fs::remove_dir_all(&sub).unwrap();
        invalidate_path(&cache.entries, &cache.front, &sub);
        assert!(cache.get(&sub.join("b.txt")).is_none());
    }

    #[test]
    fn stays_within_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let cache = FileCache::new(CacheSettings {
            max_size: 64 * 1024,
            max_file_size: 32 * 1024,
        });
        for i in 0..20 {
            let p = root.join(format!("f{i}.bin"));
            fs::write(&p, vec![b'x'; 10 * 1024]).unwrap();
            assert!(matches!(cache.load(&p, &root), Lookup::Cached(_)));
        }
        assert!(cache.weighted_size() <= 64 * 1024, "{}", cache.weighted_size());
        let big = root.join("big.bin");
        fs::write(&big, vec![b'x'; 40 * 1024]).unwrap();
        assert!(matches!(cache.load(&big, &root), Lookup::Large(..)));
    }
}
