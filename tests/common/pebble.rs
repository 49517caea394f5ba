//! pebble, the ACME CA's own test server, with pebble-challtestsrv as its DNS (every name is
//! 127.0.0.1, so validations reach a gateway listening, or published, on loopback).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{client_trusting, free_port, need, wait_until};

/// A CA and a leaf for localhost, 127.0.0.1 and `ip`, as PEM files in `dir`: pebble's own HTTPS identity
/// (rustls refuses a self-signed leaf). Returns (CA, cert, key) paths.
fn pebble_identity(dir: &Path, ip: IpAddr) -> (PathBuf, PathBuf, PathBuf) {
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if !ip.is_loopback() {
        ips.push(ip);
    }
    let (ca, leaf, key) = super::ca_and_leaf(&["localhost"], &ips);
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca).unwrap();
    std::fs::write(&paths.1, leaf).unwrap();
    std::fs::write(&paths.2, key).unwrap();
    paths
}

/// pebble and pebble-challtestsrv (whose DNS answers every name with 127.0.0.1).
pub struct Pebble {
    children: Vec<Child>,
    pub directory: String,
    pub mgmt: SocketAddr,
    pub ca: PathBuf,
    dns: u16,
    dns_mgmt: u16,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// Validations go to the gateway's `http_port` (http-01) and `tls_port` (tls-alpn-01).
    pub fn start(http_port: u16, tls_port: u16, validity_secs: Option<u64>) -> Pebble {
        let mut p = Self::prepare(http_port, tls_port, validity_secs);
        p.launch();
        p
    }

    /// Everything but the processes: ports, identity, config.
    pub fn prepare(http_port: u16, tls_port: u16, validity_secs: Option<u64>) -> Pebble {
        Self::prepare_on(IpAddr::from([127, 0, 0, 1]), http_port, tls_port, validity_secs)
    }

    /// As `prepare`, with the ACME directory on `ip` (a container reaches the host on its
    /// network's gateway address); validations still go to 127.0.0.1.
    pub fn prepare_on(ip: IpAddr, http_port: u16, tls_port: u16, validity_secs: Option<u64>) -> Pebble {
        need("pebble", "pebble");
        need("pebble-challtestsrv", "pebble");
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pebble_identity(dir.path(), ip);
        let (api, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let api_addr = SocketAddr::new(ip, api);
        let mut conf = serde_json::json!({"pebble": {
            "listenAddress": api_addr.to_string(),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity_secs {
            conf["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(dir.path().join("pebble.json"), conf.to_string()).unwrap();
        Pebble {
            children: Vec::new(),
            directory: format!("https://{api_addr}/dir"),
            mgmt: SocketAddr::from(([127, 0, 0, 1], mgmt)),
            ca,
            dns,
            dns_mgmt,
            log: Arc::new(Mutex::new(Vec::new())),
            dir,
        }
    }

    pub fn launch(&mut self) {
        let (dns, dns_mgmt) = (self.dns, self.dns_mgmt);
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut pebble = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (out, log) = (pebble.stdout.take().unwrap(), self.log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.children = vec![pebble, challtestsrv];
    }

    pub fn client(&self) -> reqwest::Client {
        client_trusting(&std::fs::read(&self.ca).unwrap(), None)
    }

    pub async fn ready(&self) {
        let c = self.client();
        let url = self.directory.clone();
        wait_until(Duration::from_secs(20), "pebble's directory", || {
            let (c, url) = (c.clone(), url.clone());
            async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    /// The root that signs the certificates pebble issues.
    pub async fn issuing_root(&self) -> Vec<u8> {
        let r = self
            .client()
            .get(format!("https://{}/roots/0", self.mgmt))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap().to_vec()
    }

    /// Answers `host` with `ip` from now on (pebble's resolver is pebble-challtestsrv).
    pub async fn set_a(&self, host: &str, ip: &str) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/add-a", self.dns_mgmt))
            .json(&serde_json::json!({ "host": host, "addresses": [ip] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "challtestsrv add-a");
    }

    /// The lines of pebble's log that hold `what`.
    pub fn log_count(&self, what: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(what)).count()
    }

    pub fn issued(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Issued certificate"))
            .count()
    }
}

/// The serial and issuer of the certificate a gateway at `addr` presents for `name` (any
/// certificate accepted).
pub async fn served_serial(addr: SocketAddr, name: &str) -> Option<(String, String)> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            orta_gateway::pem::provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name.to_string().try_into().ok()?, tcp)
        .await
        .ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.clone();
    let info = orta_gateway::pem::describe(&leaf)?;
    Some((info.serial, info.issuer))
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
