//! `[tls]` and `[acme]`: where certificates come from, the files they are read from checked
//! now (readable, a matching key, the key file private).

use super::*;

impl Validator<'_> {
    pub(super) fn tls(
        &mut self,
        raw: Option<&(Range<usize>, RawTls)>,
        acme: Option<AcmeSettings>,
        routes: &[RouteSpec],
        server: &ServerSettings,
    ) -> Option<TlsSettings> {
        let default_dir = PathBuf::from("certs/self-signed");
        let hosts: Vec<String> = {
            let mut h: Vec<String> = routes.iter().flat_map(|r| r.hosts.iter().cloned()).collect();
            h.sort();
            h.dedup();
            h
        };
        let Some((_, r)) = raw else {
            return Some(TlsSettings {
                source: CertSource::SelfSigned {
                    dir: default_dir,
                    hosts,
                },
                min_version: TlsVersion::Tls12,
            });
        };
        let min_version = match r.min_version.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("1.2", _)) => TlsVersion::Tls12,
            Some(("1.3", _)) => TlsVersion::Tls13,
            Some((other, span)) => {
                self.err(
                    span,
                    format!("tls.min_version `{other}` is not supported: use \"1.2\" or \"1.3\""),
                );
                TlsVersion::Tls12
            }
        };
        let source = match r.source.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("self-signed", _)) => {
                let dir = r
                    .self_signed_dir
                    .as_ref()
                    .map_or(default_dir, |d| PathBuf::from(d.get_ref()));
                CertSource::SelfSigned { dir, hosts }
            }
            Some(("files", span)) => {
                let mut certs = Vec::new();
                match (&r.cert, &r.key) {
                    (Some(c), Some(k)) => certs.extend(self.cert_pair(c, k)),
                    (None, None) if r.certificates.is_some() => {}
                    (Some(c), None) => self.err(c.span(), "tls.cert needs tls.key beside it"),
                    (None, Some(k)) => self.err(k.span(), "tls.key needs tls.cert beside it"),
                    (None, None) => self.missing(span, "tls.source = \"files\" needs `cert` and `key`"),
                }
                for pair in r.certificates.iter().flatten() {
                    let p = pair.get_ref();
                    certs.extend(self.cert_pair(&p.cert, &p.key));
                }
                CertSource::Files(certs)
            }
            Some(("acme", span)) => match acme {
                Some(a) => {
                    if a.challenge == AcmeChallenge::Http01 && server.http.is_none() {
                        self.err(
                            span.clone(),
                            "the http-01 challenge needs the plain listener: set server.http",
                        );
                    }
                    if server.https.is_none() {
                        self.err(span, "ACME certificates need the HTTPS listener: set server.https");
                    }
                    CertSource::Acme(a)
                }
                None => {
                    self.missing(span, "tls.source = \"acme\" needs an [acme] section with `domains`");
                    return None;
                }
            },
            Some((other, span)) => {
                self.err(
                    span,
                    format!("tls.source `{other}` is not one of \"self-signed\", \"files\", \"acme\""),
                );
                return None;
            }
        };
        Some(TlsSettings { source, min_version })
    }

    /// `[acme]`: checked whenever present, used with `tls.source = "acme"`. Needs no network.
    /// Every key is checked (each mistake reported) before the section is refused.
    pub(super) fn acme(&mut self, span: Range<usize>, r: &RawAcme) -> Option<AcmeSettings> {
        let domains = self.acme_domains(span, r);
        let contact = self.acme_contact(r);
        let directory = self.acme_directory(r);
        let challenge = self.acme_challenge(r);
        let check_interval = self.positive_duration(r.check_interval.as_ref(), Duration::from_secs(12 * 3600));
        let renew_before = self.acme_renew_before(r);
        let ca_root = self.acme_ca_root(r);
        Some(AcmeSettings {
            domains: domains?,
            contact: contact?,
            directory: directory?,
            challenge: challenge?,
            cache_dir: r
                .cache_dir
                .as_ref()
                .map_or_else(|| PathBuf::from("certs/acme"), |d| PathBuf::from(d.get_ref())),
            check_interval,
            renew_before: renew_before?,
            ca_root: ca_root?,
        })
    }

    fn acme_domains(&mut self, span: Range<usize>, r: &RawAcme) -> Option<Vec<String>> {
        let Some(list) = &r.domains else {
            self.missing(
                span,
                "[acme] needs `domains`, e.g. [\"example.com\", \"www.example.com\"]",
            );
            return None;
        };
        if list.get_ref().is_empty() {
            self.err(list.span(), "acme.domains is empty");
            return None;
        }
        let mut ok = true;
        let mut domains = Vec::new();
        for d in list.get_ref() {
            match normalize_host(d.get_ref()).filter(|h| h.contains('.') || h == "localhost") {
                Some(h) if h.starts_with("*.") || !h.contains('*') => {
                    if !domains.contains(&h) {
                        domains.push(h)
                    }
                }
                _ => {
                    self.err(d.span(), format!("`{}` is not a domain name", d.get_ref()));
                    ok = false;
                }
            }
        }
        ok.then_some(domains)
    }

    fn acme_contact(&mut self, r: &RawAcme) -> Option<Vec<String>> {
        let mut ok = true;
        let mut contact = Vec::new();
        for c in r.contact.iter().flat_map(|l| l.get_ref()) {
            match c.get_ref().strip_prefix("mailto:") {
                Some(addr) if addr.contains('@') && !addr.contains(char::is_whitespace) => {
                    contact.push(c.get_ref().clone())
                }
                _ => {
                    self.err(c.span(), format!("contact `{}` must be a mailto: address", c.get_ref()));
                    ok = false;
                }
            }
        }
        ok.then_some(contact)
    }

    fn acme_directory(&mut self, r: &RawAcme) -> Option<String> {
        match r.directory.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
            None | Some(("letsencrypt", _)) => Some(LETS_ENCRYPT.to_string()),
            Some(("letsencrypt-staging", _)) => Some(LETS_ENCRYPT_STAGING.to_string()),
            Some((url, span)) => match url.parse::<http::Uri>() {
                Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(url.to_string()),
                _ => {
                    self.err(
                        span,
                        format!(
                            "acme.directory `{url}` is not \"letsencrypt\", \"letsencrypt-staging\" or an https URL"
                        ),
                    );
                    None
                }
            },
        }
    }

    fn acme_challenge(&mut self, r: &RawAcme) -> Option<AcmeChallenge> {
        match r.challenge.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
            None | Some(("tls-alpn-01", _)) => Some(AcmeChallenge::TlsAlpn01),
            Some(("http-01", _)) => Some(AcmeChallenge::Http01),
            Some((other, span)) => {
                self.err(
                    span,
                    format!("acme.challenge `{other}` is not \"tls-alpn-01\" or \"http-01\""),
                );
                None
            }
        }
    }

    fn acme_renew_before(&mut self, r: &RawAcme) -> Option<RenewBefore> {
        match &r.renew_before {
            None => Some(RenewBefore::Auto),
            Some(v) if v.get_ref() == "auto" => Some(RenewBefore::Auto),
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => Some(RenewBefore::Before(d)),
                _ => {
                    self.err(
                        v.span(),
                        format!(
                            "renew_before `{}` is not \"auto\" or a duration like \"30d\"",
                            v.get_ref()
                        ),
                    );
                    None
                }
            },
        }
    }

    /// `ca_root`, a readable PEM chain when set (`Some(None)`: not set).
    fn acme_ca_root(&mut self, r: &RawAcme) -> Option<Option<PathBuf>> {
        let Some(c) = r.ca_root.as_ref().filter(|c| !c.get_ref().trim().is_empty()) else {
            return Some(None);
        };
        let path = PathBuf::from(c.get_ref());
        if let Err(e) = crate::pem::chain_of(&path, self.fs.read(&path)) {
            self.err(c.span(), e);
            return None;
        }
        Some(Some(path))
    }

    pub(super) fn cert_pair(&mut self, cert: &Spanned<String>, key: &Spanned<String>) -> Option<LoadedCert> {
        let cert_path = PathBuf::from(cert.get_ref());
        let key_path = PathBuf::from(key.get_ref());
        let chain = match crate::pem::chain_of(&cert_path, self.fs.read(&cert_path)) {
            Ok(c) => c,
            Err(e) => {
                self.err(cert.span(), e);
                return None;
            }
        };
        if let Err(e) = crate::pem::check_key_mode(&key_path, self.fs.mode(&key_path)) {
            self.err(key.span(), e);
            return None;
        }
        let signing_key = match crate::pem::key_of(&key_path, self.fs.read(&key_path)) {
            Ok(k) => k,
            Err(e) => {
                self.err(key.span(), e);
                return None;
            }
        };
        let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
        if let Err(e) = certified.keys_match() {
            self.err(
                key.span(),
                format!(
                    "{} does not match the certificate {}: {e}",
                    key_path.display(),
                    cert_path.display()
                ),
            );
            return None;
        }
        Some(LoadedCert {
            cert_path,
            key_path,
            key: Arc::new(certified),
        })
    }
}
