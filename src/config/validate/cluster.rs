//! `[cluster]`: the Redis URL (`redis://` or `rediss://`), the key prefix, this node's name, the
//! secret that encrypts private keys in Redis (from an environment variable or a private file,
//! never inline), and the timeouts. Whether Redis answers is not asked here: `check` and startup
//! ask it through `cluster::probe`, with the position this records.

use super::*;

/// A secret shorter than this is refused: it is the only thing between Redis and the keys.
const MIN_SECRET: usize = 16;

impl Validator<'_> {
    pub(super) fn cluster(
        &mut self,
        path: &Path,
        span: Range<usize>,
        c: &RawCluster,
        acme: bool,
    ) -> Option<ClusterSettings> {
        let Some(url) = &c.redis else {
            self.missing(span, "[cluster] needs `redis`, e.g. \"redis://127.0.0.1:6379/0\"");
            return None;
        };
        let text = url.get_ref().trim();
        let scheme_ok = text.starts_with("redis://") || text.starts_with("rediss://");
        if !scheme_ok {
            self.err(url.span(), "`redis` must be a redis:// or rediss:// URL");
        } else if let Err(e) = redis::IntoConnectionInfo::into_connection_info(text) {
            self.err(url.span(), format!("`redis` is not a valid Redis URL: {e}"));
        }
        let (line, col) = self.d.line_col(url.span().start);
        let redis_at = format!("{}:{line}:{col}", path.display());
        let key_prefix = c
            .key_prefix
            .as_ref()
            .map_or(ClusterSettings::DEFAULT_PREFIX.to_string(), |p| p.get_ref().clone());
        let node_name = match &c.node_name {
            Some(n) if !n.get_ref().trim().is_empty() => {
                let name = n.get_ref().trim();
                if name.len() > 128 || name.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                    self.err(
                        n.span(),
                        "node_name is up to 128 characters, without spaces or control characters",
                    );
                }
                name.to_string()
            }
            _ => host_name(),
        };
        let secret = self.cluster_secret(span.clone(), c, acme);
        let timeout = self.duration(c.timeout.as_ref(), ClusterSettings::DEFAULT_TIMEOUT);
        if let Some(t) = &c.timeout
            && (timeout.is_zero() || timeout > Duration::from_secs(10))
        {
            self.err(t.span(), "timeout must be between 1ms and 10s");
        }
        let lock_ttl = self.duration(c.lock_ttl.as_ref(), ClusterSettings::DEFAULT_LOCK_TTL);
        if let Some(t) = &c.lock_ttl
            && lock_ttl < Duration::from_secs(1)
        {
            self.err(t.span(), "lock_ttl must be at least 1s");
        }
        scheme_ok.then(|| ClusterSettings {
            redis: text.to_string(),
            redis_at,
            key_prefix,
            node_name,
            secret,
            timeout,
            lock_ttl,
        })
    }

    /// The secret from `secret_env` or `secret_file` (one of them, and one is needed with ACME).
    fn cluster_secret(&mut self, span: Range<usize>, c: &RawCluster, acme: bool) -> Option<ClusterSecret> {
        let (bytes, from, at) = match (&c.secret_env, &c.secret_file) {
            (Some(e), Some(_)) => {
                self.err(e.span(), "give the secret by secret_env or secret_file, not both");
                return None;
            }
            (Some(e), None) => {
                let name = e.get_ref();
                match std::env::var(name) {
                    Ok(v) if !v.trim().is_empty() => (v.trim().as_bytes().to_vec(), format!("env {name}"), e.span()),
                    _ => {
                        self.err(
                            e.span(),
                            format!("the environment variable {name} (secret_env) is not set or empty"),
                        );
                        return None;
                    }
                }
            }
            (None, Some(f)) => {
                let file = PathBuf::from(f.get_ref());
                match (self.fs.mode(&file), self.fs.read(&file)) {
                    (Ok(mode), _) if mode & 0o077 != 0 => {
                        self.err(
                            f.span(),
                            format!(
                                "secret_file {} can be read by others (mode {mode:o}): chmod 600 it",
                                file.display()
                            ),
                        );
                        return None;
                    }
                    (Ok(_), Ok(b)) => {
                        let text = String::from_utf8_lossy(&b).trim().as_bytes().to_vec();
                        (text, format!("file {}", file.display()), f.span())
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        self.err(f.span(), format!("cannot read secret_file {}: {e}", file.display()));
                        return None;
                    }
                }
            }
            (None, None) => {
                if acme {
                    self.err(
                        span,
                        "[cluster] with ACME needs secret_env or secret_file: the key that encrypts \
                         private keys kept in Redis",
                    );
                }
                return None;
            }
        };
        if bytes.len() < MIN_SECRET {
            self.err(
                at,
                format!("the cluster secret ({from}) must be at least {MIN_SECRET} bytes"),
            );
            return None;
        }
        Some(ClusterSecret { from, bytes })
    }
}

/// The machine's host name (the default node name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::{ZoneScope, parse};
    use std::path::Path;

    /// Three lines, so the section under test starts on line 4.
    const HEAD: &str = "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"\"\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), &format!("{HEAD}{text}")) {
            Ok(_) => vec![],
            Err(d) => d.error_lines(),
        }
    }

    #[test]
    fn cluster_mistakes_are_positioned() {
        let e = errors("[cluster]\nredis = \"http://x\"\n");
        assert!(e.iter().any(|l| l.contains(":5:9:") && l.contains("redis://")), "{e:?}");
        let e = errors("[cluster]\nkey_prefix = \"x\"\n");
        assert!(e.iter().any(|l| l.contains("needs `redis`")), "{e:?}");
        let e = errors("[cluster]\nredis = \"redis://127.0.0.1:1/0\"\nsecret_env = \"ORTA_TEST_UNSET_SECRET\"\n");
        assert!(e.iter().any(|l| l.contains(":6:14:") && l.contains("not set")), "{e:?}");
        let e = errors("[cluster]\nredis = \"redis://127.0.0.1:1/0\"\ntimeout = \"0s\"\n");
        assert!(e.iter().any(|l| l.contains("timeout must be")), "{e:?}");
        let e = errors("[[rate_limit]]\nname = \"z\"\nrate = \"1/s\"\nscope = \"cluster\"\n");
        assert!(
            e.iter().any(|l| l.contains(":7:9:") && l.contains("[cluster]")),
            "{e:?}"
        );
        let e = errors("[[rate_limit]]\nname = \"z\"\nrate = \"1/s\"\nscope = \"global\"\n");
        assert!(e.iter().any(|l| l.contains("not one of local, cluster")), "{e:?}");
    }

    #[test]
    fn a_cluster_zone_and_defaults() {
        let text = format!(
            "{HEAD}[cluster]\nredis = \"redis://u:pw@127.0.0.1:1/0\"\n[[rate_limit]]\nname = \"z\"\nrate = \"1/s\"\nscope = \"cluster\"\n"
        );
        let loaded = parse(Path::new("t.toml"), &text).unwrap();
        let c = loaded.config.cluster.as_ref().unwrap();
        assert_eq!(c.key_prefix, "orta-gateway:");
        assert!(!c.node_name.is_empty());
        assert_eq!(c.redis_at, "t.toml:5:9");
        assert_eq!(c.redis_redacted(), "redis://u:***@127.0.0.1:1/0");
        assert!(!format!("{c:?}").contains("pw"), "the password never shows");
        assert_eq!(loaded.config.rate_limits[0].scope, ZoneScope::Cluster);
    }
}
