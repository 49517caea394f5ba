//! Reload triggers: a change to the config file or the files it names (certificates) noticed by
//! notify, SIGHUP (in `server::run`). The files' directories are watched rather than the files,
//! so editors that save by writing a new file and renaming it over the old (vim, `sed -i`) are
//! seen too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// How long a burst of events must be quiet before reloading (editors write in steps).
const SETTLE: Duration = Duration::from_millis(150);

/// Watches `files`; each change sends `()` on `tx`. `None` when notifications are unavailable
/// (SIGHUP still works).
pub fn watch(files: &[PathBuf], tx: UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    let mut dirs = HashSet::new();
    let mut names = HashSet::new();
    for f in files {
        let Some(abs) = absolute(f) else { continue };
        if let Some(dir) = abs.parent() {
            dirs.insert(dir.to_path_buf());
        }
        names.insert(abs);
    }
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else {
            // lost events: reload to be safe
            let _ = tx.send(());
            return;
        };
        if !ev.kind.is_access() && ev.paths.iter().any(|p| names.contains(p)) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::warn!("config file watching unavailable ({e}); reload with SIGHUP"))
    .ok()?;
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), "cannot watch for config changes ({e}); reload with SIGHUP");
        }
    }
    Some(watcher)
}

/// The path with its directory resolved (the file itself may be replaced at any time).
fn absolute(f: &Path) -> Option<PathBuf> {
    let name = f.file_name()?;
    let dir = match f.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

/// Waits until no more change arrives for a moment, swallowing the burst.
pub async fn settle(rx: &mut UnboundedReceiver<()>) {
    while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {}
}
