//! The file shape of `gateway.toml`: serde structs that mirror the TOML one to one, with spans
//! kept on every value that validation may need to point at. Nothing here is interpreted; that
//! happens in `validate`.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub http: Option<S<String>>,
    pub https: Option<S<String>>,
    pub redirect_to_https: Option<bool>,
    pub workers: Option<S<i64>>,
    pub max_body_size: Option<S<String>>,
    pub max_header_size: Option<S<String>>,
    pub header_read_timeout: Option<S<String>>,
    pub body_read_timeout: Option<S<String>>,
    pub send_timeout: Option<S<String>>,
    pub keepalive_timeout: Option<S<String>>,
    pub max_connections: Option<S<i64>>,
    pub max_connections_per_ip: Option<S<i64>>,
    pub shutdown_grace: Option<S<String>>,
    pub trusted_proxies: Option<S<Vec<S<String>>>>,
    pub proxy_protocol: Option<S<bool>>,
    pub server_header: Option<S<bool>>,
    pub underscores_in_headers: Option<S<bool>>,
    pub hosts_file: Option<S<String>>,
    pub http3: Option<S<bool>>,
    pub alt_svc_max_age: Option<S<String>>,
    pub http3_advertised_port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub source: Option<S<String>>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    /// More certificate/key pairs, chosen by SNI (`source = "files"`).
    pub certificates: Option<Vec<S<RawCertPair>>>,
    pub min_version: Option<S<String>>,
    /// Where the self-signed CA and certificate are cached (`source = "self-signed"`).
    pub self_signed_dir: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub domains: Option<S<Vec<S<String>>>>,
    pub contact: Option<S<Vec<S<String>>>>,
    pub directory: Option<S<String>>,
    pub challenge: Option<S<String>>,
    pub cache_dir: Option<S<String>>,
    pub check_interval: Option<S<String>>,
    pub renew_before: Option<S<String>>,
    pub ca_root: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub strict_transport_security: Option<S<String>>,
    pub x_content_type_options: Option<S<String>>,
    pub x_frame_options: Option<S<String>>,
    pub referrer_policy: Option<S<String>>,
    pub content_security_policy: Option<S<String>>,
    pub permissions_policy: Option<S<String>>,
    /// Only meaningful on a route: its values win over an upstream's own.
    #[serde(rename = "override")]
    pub override_upstream: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub algorithms: Option<S<Vec<S<String>>>>,
    pub min_size: Option<S<i64>>,
    pub types: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_size: Option<S<String>>,
    pub max_file_size: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: Option<S<String>>,
    pub rate: Option<S<String>>,
    pub burst: Option<S<i64>>,
    pub scope: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: Option<S<String>>,
    pub key_prefix: Option<S<String>>,
    pub node_name: Option<S<String>>,
    pub secret_env: Option<S<String>>,
    pub secret_file: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub lock_ttl: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheZone {
    pub name: Option<S<String>>,
    pub max_size: Option<S<String>>,
    pub max_object_size: Option<S<String>>,
}

/// A route's `cache = { zone = "...", ttl = "10s", ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub zone: Option<S<String>>,
    pub ttl: Option<S<String>>,
    pub stale_while_revalidate: Option<S<String>>,
    pub stale_if_error: Option<S<String>>,
    pub lock_timeout: Option<S<String>>,
    pub status_header: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Option<S<String>>,
    pub servers: Option<S<Vec<S<String>>>>,
    pub balance: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub read_timeout: Option<S<String>>,
    pub retries: Option<S<i64>>,
    pub health: Option<S<RawHealth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub fails: Option<S<i64>>,
    pub passes: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<S<String>>,
    pub host: Option<S<Vec<S<String>>>>,
    pub path: Option<S<String>>,
    pub upstream: Option<S<String>>,
    pub root: Option<S<String>>,
    pub index: Option<S<String>>,
    pub redirect: Option<S<String>>,
    pub rate_limit: Option<S<String>>,
    pub cache_control: Option<S<String>>,
    pub cache: Option<S<RawRouteCache>>,
    pub cache_ignore_cookies: Option<S<Vec<S<String>>>>,
    pub headers: Option<S<RawHeaders>>,
    pub allow: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<S<String>>,
    pub access: Option<S<String>>,
    pub rotation: Option<S<String>>,
    pub keep: Option<S<i64>>,
    pub format: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<S<String>>,
    pub allow_remote: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub replicas: Option<S<Vec<S<String>>>>,
    pub database: Option<S<String>>,
}
