//! The validated configuration as plain data: [`Config`] and the settings it is made of.
//! Immutable once built; a reload builds a new one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::sign::CertifiedKey;

use super::diag::Diagnostics;
use super::settings::{
    AccessSettings, CacheSettings, CacheZoneSpec, ClusterSettings, CompressionSettings, RouteCacheSpec,
    SecurityHeaders, ZoneSpec,
};
use crate::proto::client_ip::TrustedProxies;

/// A validated config, with the warnings found while validating it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub warnings: Diagnostics,
}

/// The whole running configuration. Immutable once built; a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub upstreams: Vec<UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    /// `[headers]`: the security headers of responses outside any route (a route has its own).
    pub headers: SecurityHeaders,
    pub rate_limits: Vec<ZoneSpec>,
    pub compression: CompressionSettings,
    pub cache: CacheSettings,
    /// `[[cache_zone]]`: the proxy response caches.
    pub cache_zones: Vec<CacheZoneSpec>,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub api: Option<ApiSettings>,
    /// `[cluster]`: state shared with other gateways through Redis.
    pub cluster: Option<ClusterSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub redirect_to_https: bool,
    /// Runtime worker threads; 0 = one per CPU core.
    pub workers: usize,
    pub max_body_size: u64,
    pub max_header_size: usize,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Longest pause between two chunks of a request body.
    pub body_read_timeout: Duration,
    /// Longest wait for a client to take bytes of a response (HTTP/1.1).
    pub send_timeout: Duration,
    pub shutdown_grace: Duration,
    pub trusted_proxies: TrustedProxies,
    /// Expect a PROXY v1/v2 header from trusted proxies on both listeners.
    pub proxy_protocol: bool,
    /// An `/etc/hosts`-format file answering before DNS for upstream server names.
    pub hosts_file: Option<PathBuf>,
    pub server_header: bool,
    /// Pass request fields whose names hold `_` (dropped by default: CGI and WSGI backends
    /// read `X_Forwarded_For` as `X-Forwarded-For`).
    pub underscores_in_headers: bool,
    /// HTTP/3 (QUIC) on the UDP port of `https`.
    pub http3: bool,
    /// `ma` of the `Alt-Svc` that advertises HTTP/3 on HTTPS answers over TCP.
    pub alt_svc_max_age: Duration,
    /// The UDP port advertised in `Alt-Svc` (0: the port `https` is bound to).
    pub http3_advertised_port: u16,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            https: Some(SocketAddr::from(([127, 0, 0, 1], 8443))),
            redirect_to_https: true,
            workers: 0,
            max_body_size: 20 << 20,
            max_header_size: 16 << 10,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            hosts_file: None,
            server_header: false,
            underscores_in_headers: false,
            http3: false,
            alt_svc_max_age: Duration::from_secs(24 * 3600),
            http3_advertised_port: 0,
        }
    }
}

/// Lowest TLS protocol version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Clone)]
pub struct TlsSettings {
    pub source: CertSource,
    pub min_version: TlsVersion,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("source", &self.source)
            .field("min_version", &self.min_version)
            .finish()
    }
}

/// Where the HTTPS listener's certificates come from.
#[derive(Clone)]
pub enum CertSource {
    /// A local CA and a certificate for the route hosts, generated and cached in `dir`.
    SelfSigned { dir: PathBuf, hosts: Vec<String> },
    /// PEM files, loaded and checked at validation; chosen by SNI, the first is the default.
    Files(Vec<LoadedCert>),
    /// Issued and renewed by an ACME CA.
    Acme(AcmeSettings),
}

/// `[acme]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// One certificate for all of them.
    pub domains: Vec<String>,
    pub contact: Vec<String>,
    /// The directory URL.
    pub directory: String,
    pub challenge: AcmeChallenge,
    pub cache_dir: PathBuf,
    pub check_interval: Duration,
    pub renew_before: RenewBefore,
    /// An extra PEM root to trust for the directory (a private or test CA).
    pub ca_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    TlsAlpn01,
    Http01,
}

/// When to renew a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewBefore {
    /// The CA's ARI window (RFC 9773) when it offers one, else with a third of the lifetime left.
    Auto,
    /// This long before it expires.
    Before(Duration),
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertSource::SelfSigned { dir, hosts } => f
                .debug_struct("SelfSigned")
                .field("dir", dir)
                .field("hosts", hosts)
                .finish(),
            CertSource::Files(certs) => f.debug_list().entries(certs.iter().map(|c| &c.cert_path)).finish(),
            CertSource::Acme(a) => a.fmt(f),
        }
    }
}

/// A certificate chain and key read from files.
#[derive(Clone)]
pub struct LoadedCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub key: Arc<CertifiedKey>,
}

/// How an upstream spreads requests over its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    IpHash,
}

/// One upstream server address as written: an IP, or a name resolved when connecting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    Ip(SocketAddr),
    Name(String, u16),
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Ip(a) => write!(f, "{a}"),
            ServerAddr::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    pub servers: Vec<ServerAddr>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: u32,
    pub health: Option<HealthSpec>,
    /// `server.hosts_file`: consulted before DNS for server names.
    pub hosts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fails: u32,
    pub passes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Lower-cased host names; empty means any host.
    pub hosts: Vec<String>,
    /// Path prefix, starting with `/`.
    pub path: String,
    pub action: RouteAction,
    /// The `[[rate_limit]]` zone applied to the route.
    pub rate_limit: Option<String>,
    /// The route's security headers (`[headers]` with `[route.headers]` over it).
    pub headers: SecurityHeaders,
    /// Only these client networks may use the route (403 for others); `None`: everyone.
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// Proxied responses kept in a cache zone (routes with `upstream` only).
    pub cache: Option<RouteCacheSpec>,
    /// The route's label in logs and metrics: its `name`, else its first host and its path
    /// (`/api/`, `shop.example/api/`), so it stays the same when lines above it move.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Proxy to the named upstream.
    Upstream(String),
    /// Serve files from a directory.
    Static {
        root: PathBuf,
        index: Option<String>,
        cache_control: Option<HeaderValue>,
    },
    /// 301 to this base URL, keeping path and query.
    Redirect(String),
}

/// Lowest level of the error log on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub level: LogLevel,
    pub format: LogFormat,
    pub access: AccessSettings,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
            access: AccessSettings::default(),
        }
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: no admin listener.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub replicas: Vec<SocketAddr>,
    pub database: Option<PathBuf>,
}
