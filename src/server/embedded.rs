//! What the server knows of a service it runs in its own process, on listeners of its own: the
//! bundled API, plugged in from the layer above through these two traits. The server binds the
//! sockets (one per `[api].replicas` address, in the reload's prepare step) and owns their accept
//! loops' lifetimes; the service makes itself ready for a config and serves what it is given.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ApiSettings;

/// A listener's serving loop, as a task to spawn.
pub type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service made ready for one config (the API with its database open).
pub trait Ready: std::any::Any + Send + Sync {
    /// Serves `listener` (bound at `local`) until `stop` turns true.
    fn serve(self: Arc<Self>, listener: TcpListener, local: SocketAddr, stop: watch::Receiver<bool>) -> Serving;
}

/// An in-process service the gateway can run.
pub trait Embedded: Send + Sync + 'static {
    /// Makes the service ready for `settings`. `current` is the running instance: returning it
    /// (the same `Arc`) says nothing it depends on changed, so the running replicas stay.
    /// Called while a reload prepares, before anything changes, so it may fail.
    fn prepare(&self, settings: &ApiSettings, current: Option<&Arc<dyn Ready>>) -> Result<Arc<dyn Ready>, String>;
}

/// Whether two ready instances are the same one.
pub(super) fn same(a: &Arc<dyn Ready>, b: &Arc<dyn Ready>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}
