//! The smaller sections: `[headers]` (and a route's), `[compression]`, `[cache]`,
//! `[[rate_limit]]` and `[log]`.

use super::*;

impl Validator<'_> {
    /// A header set from `[headers]` or `[route.headers]` over `base`; `""` removes one.
    pub(super) fn headers(&mut self, base: &SecurityHeaders, h: &RawHeaders) -> SecurityHeaders {
        // in SECURITY_HEADERS's order (a unit test holds them together)
        let raw = [
            &h.strict_transport_security,
            &h.x_content_type_options,
            &h.x_frame_options,
            &h.referrer_policy,
            &h.content_security_policy,
            &h.permissions_policy,
        ];
        let values = raw.map(|v| {
            let v = v.as_ref()?;
            let text = v.get_ref().trim();
            if text.is_empty() {
                return Some(None);
            }
            match HeaderValue::from_str(text) {
                Ok(value) => Some(Some(value)),
                Err(_) => {
                    self.err(v.span(), "not a valid header value");
                    None
                }
            }
        });
        let override_upstream = h.override_upstream.as_ref().is_some_and(|o| *o.get_ref());
        SecurityHeaders::derive(base, values, override_upstream)
    }

    pub(super) fn compression(&mut self, c: &RawCompression) -> CompressionSettings {
        let mut s = CompressionSettings::default();
        if let Some(list) = &c.algorithms {
            s.algorithms.clear();
            for a in list.get_ref() {
                match Encoding::parse(a.get_ref()) {
                    Some(e) if s.algorithms.contains(&e) => {
                        self.err(a.span(), format!("`{}` is listed twice", a.get_ref()))
                    }
                    Some(e) => s.algorithms.push(e),
                    None => self.err(
                        a.span(),
                        format!("compression algorithm `{}` is not one of \"br\", \"gzip\"", a.get_ref()),
                    ),
                }
            }
        }
        s.min_size = self.count(c.min_size.as_ref(), s.min_size, 0, i64::MAX);
        if let Some(list) = &c.types {
            s.types.clear();
            for t in list.get_ref() {
                let v = t.get_ref().trim().to_ascii_lowercase();
                match v.split_once('/') {
                    Some((a, b)) if !a.is_empty() && !b.is_empty() && !a.contains('*') => s.types.push(v),
                    _ => self.err(
                        t.span(),
                        format!(
                            "`{}` is not a media type like \"text/*\" or \"application/json\"",
                            t.get_ref()
                        ),
                    ),
                }
            }
        }
        s
    }

    pub(super) fn cache(&mut self, c: &RawCache) -> CacheSettings {
        let d = CacheSettings::default();
        let max_size = self.size(c.max_size.as_ref(), d.max_size);
        let max_file_size = self.size(c.max_file_size.as_ref(), d.max_file_size.min(max_size));
        if let Some(v) = &c.max_file_size {
            if max_file_size > max_size {
                self.err(v.span(), "max_file_size must not be larger than max_size");
            } else if max_file_size > 1 << 30 {
                self.err(v.span(), "max_file_size must be at most 1GiB");
            }
        }
        CacheSettings {
            max_size,
            max_file_size,
        }
    }

    pub(super) fn zone(&mut self, span: Range<usize>, z: &RawRateLimit, has_cluster: bool) -> Option<ZoneSpec> {
        let scope = match z.scope.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "local")) => ZoneScope::Local,
            Some((_, "cluster")) if has_cluster => ZoneScope::Cluster,
            Some((s, "cluster")) => {
                self.err(
                    s.span(),
                    "scope = \"cluster\" needs a [cluster] section (its Redis keeps the buckets)",
                );
                ZoneScope::Local
            }
            Some((s, other)) => {
                self.err(s.span(), format!("scope `{other}` is not one of local, cluster"));
                ZoneScope::Local
            }
        };
        let burst = self.count(z.burst.as_ref(), 0, 0, 1_000_000) as u32;
        let name = match &z.name {
            Some(n) if !n.get_ref().is_empty() => Some(n.get_ref().clone()),
            Some(n) => {
                self.err(n.span(), "a zone name must not be empty");
                None
            }
            None => {
                self.missing(span.clone(), "[[rate_limit]] needs a `name`");
                None
            }
        };
        let rate = match &z.rate {
            None => {
                self.missing(span, "[[rate_limit]] needs a `rate`, e.g. \"10/s\"");
                None
            }
            Some(r) => match parse_rate(r.get_ref()) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    self.err(r.span(), e);
                    None
                }
            },
        };
        let ((count, period), name) = (rate?, name?);
        Some(ZoneSpec {
            name,
            count,
            period,
            burst,
            scope,
        })
    }

    pub(super) fn log(&mut self, raw: Option<&(Range<usize>, RawLog)>) -> LogSettings {
        let mut s = LogSettings::default();
        let Some((_, r)) = raw else { return s };
        if let Some(l) = &r.level {
            s.level = match l.get_ref().as_str() {
                "trace" => LogLevel::Trace,
                "debug" => LogLevel::Debug,
                "info" => LogLevel::Info,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                other => {
                    self.err(
                        l.span(),
                        format!("log level `{other}` is not one of trace, debug, info, warn, error"),
                    );
                    LogLevel::Info
                }
            };
        }
        if let Some(f) = &r.format {
            s.format = match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.err(
                        f.span(),
                        format!("log format `{other}` is not one of \"text\", \"json\""),
                    );
                    LogFormat::Text
                }
            };
        }
        if let Some(r) = &r.rotation {
            s.access.rotation = match r.get_ref().as_str() {
                "minutely" => Rotate::Minutely,
                "hourly" => Rotate::Hourly,
                "daily" => Rotate::Daily,
                "never" => Rotate::Never,
                other => {
                    self.err(
                        r.span(),
                        format!("rotation `{other}` is not one of \"hourly\", \"daily\", \"never\""),
                    );
                    Rotate::Daily
                }
            };
        }
        s.access.keep = self.count(r.keep.as_ref(), s.access.keep as u64, 0, 10_000) as usize;
        if let Some(a) = &r.access {
            s.access.target = match a.get_ref().trim() {
                "off" => AccessTarget::Off,
                "stdout" => AccessTarget::Stdout,
                "" => {
                    self.err(a.span(), "log.access must be \"off\", \"stdout\" or a file path");
                    AccessTarget::Off
                }
                path => AccessTarget::File(PathBuf::from(path)),
            };
        }
        s
    }
}
