//! Handlers: what a route does with a request once it is chosen: proxy to an upstream, serve
//! files, or redirect.

pub mod files;
pub mod proxy;
pub mod redirect;

use std::sync::Arc;

use crate::config::RouteAction;
use crate::config::RouteSpec;
use crate::upstream::Upstream;
use files::StaticRoute;

/// A route's handler, resolved against the running state (upstreams by name).
pub enum Handler {
    Proxy(Arc<Upstream>),
    Static(StaticRoute),
    Redirect(String),
}

impl Handler {
    /// Resolves a route's action; `upstream` looks an upstream up by name.
    pub fn new(route: &RouteSpec, upstream: impl Fn(&str) -> Option<Arc<Upstream>>) -> Option<Self> {
        Some(match &route.action {
            RouteAction::Upstream(name) => Handler::Proxy(upstream(name)?),
            RouteAction::Redirect(to) => Handler::Redirect(to.clone()),
            RouteAction::Static {
                root,
                index,
                cache_control,
            } => Handler::Static(StaticRoute::new(
                &route.path,
                root,
                index.clone(),
                cache_control.clone(),
            )),
        })
    }
}
