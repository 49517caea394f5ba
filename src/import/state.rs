//! The translator's state, shared by the passes over nginx's levels: the plan being built and
//! the names of nginx's `upstream` blocks; counting what is translated, reporting what is not;
//! and what `return` means to the gateway.

use super::parse::Directive;
use super::plan::{Plan, Table, quote, quote_list};

/// The translation in progress.
pub struct Translator {
    pub plan: Plan,
    /// Names of nginx `upstream` blocks.
    pub upstreams: Vec<String>,
    /// Plain-HTTP-only servers with content (which a `redirect_to_https` would redirect too).
    pub plain_sites: Vec<super::parse::At>,
}

impl Default for Translator {
    fn default() -> Self {
        Self::new()
    }
}

impl Translator {
    pub fn new() -> Translator {
        Translator {
            plan: Plan::default(),
            upstreams: Vec::new(),
            plain_sites: Vec::new(),
        }
    }

    pub fn ok(&mut self) {
        self.plan.translated += 1;
    }

    pub fn report(&mut self, d: &Directive, reason: &str) {
        self.plan.report(&d.at, &d.name, reason);
    }

    /// Reports `d` and everything inside it.
    pub fn report_all(&mut self, d: &Directive, reason: &str) {
        self.report(d, reason);
        for inner in d.block.iter().flatten() {
            self.report_all(inner, reason);
        }
    }

    /// A route for `hosts` and `path` (no handler yet).
    pub fn route(&self, d: &Directive, hosts: &[String], path: &str) -> Table {
        let mut route = Table::new(&d.at);
        if !hosts.is_empty() {
            route.set("host", quote_list(hosts), &d.at);
        }
        route.set("path", quote(path), &d.at);
        route
    }
}

/// `return 301 https://$host$request_uri` (or `$server_name`, or 302/308).
pub fn https_redirect(d: &Directive) -> bool {
    d.name == "return"
        && d.args.len() == 2
        && matches!(d.args[0].as_str(), "301" | "302" | "307" | "308")
        && matches!(
            d.args[1].as_str(),
            "https://$host$request_uri" | "https://$server_name$request_uri" | "https://$http_host$request_uri"
        )
}

/// A `return 301 URL[$request_uri]`'s target for a gateway redirect (which keeps the path and
/// query, so `$request_uri` must end the URL).
pub fn redirect_target(r: &Directive) -> Result<String, String> {
    let (code, url) = match r.args.as_slice() {
        [code, url] if matches!(code.as_str(), "301" | "302" | "303" | "307" | "308") => (code.as_str(), url.as_str()),
        [code, ..] => {
            return Err(format!(
                "`return {code}`: a fixed answer has no route equivalent (paths no route serves get 404)"
            ));
        }
        _ => return Err("expected a status and a URL".into()),
    };
    if code != "301" {
        return Err(format!(
            "the gateway redirects with 301; `return {code}` is not translated"
        ));
    }
    let Some(base) = url.strip_suffix("$request_uri") else {
        return Err(format!(
            "`{url}`: the gateway's redirect keeps the request's path and query, so only URLs ending in $request_uri translate"
        ));
    };
    if base.contains('$') || !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(format!("`{url}`: only a fixed scheme and host translate"));
    }
    Ok(base.trim_end_matches('/').to_string())
}
