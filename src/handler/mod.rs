//! Handlers: what a route does with a request once it is chosen. Proxy to an upstream, redirect,
//! or (with the static files issue) serve files.

pub mod proxy;
pub mod redirect;

use std::sync::Arc;

use crate::config::RouteAction;
use crate::upstream::Upstream;

/// A route's handler, resolved against the running state (upstreams by name).
pub enum Handler {
    Proxy(Arc<Upstream>),
    Redirect(String),
    /// Static files are not served yet: the route answers 404.
    Static,
}

impl Handler {
    /// Resolves a route action; `upstream` looks an upstream up by name.
    pub fn new(action: &RouteAction, upstream: impl Fn(&str) -> Option<Arc<Upstream>>) -> Option<Self> {
        Some(match action {
            RouteAction::Upstream(name) => Handler::Proxy(upstream(name)?),
            RouteAction::Redirect(to) => Handler::Redirect(to.clone()),
            RouteAction::Static { .. } => Handler::Static,
        })
    }
}
