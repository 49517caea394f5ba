//! One ACME order run by a cluster node (RFC 8555 over rustls-acme's protocol client): account,
//! order, each authorization answered through the cluster's `Board` (published in Redis before
//! the CA is told to validate), finalization with a fresh P-256 key, download. Returns the PEM
//! the cache keeps: private key, then chain.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::ClientConfig;
use rustls_acme::acme::{Account, AuthStatus, Challenge, ChallengeType, Directory, Identifier, OrderStatus};

use super::challenge::Board;
use crate::config::{AcmeChallenge, AcmeSettings};

/// Waits between polls of an authorization or a processing order.
const POLLS: [u64; 8] = [250, 500, 1000, 2000, 4000, 8000, 16000, 16000];

fn fail(what: &str) -> impl Fn(rustls_acme::acme::AcmeError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Runs one order to its certificate with the account key `account_key` (PKCS#8).
pub async fn run(
    settings: &AcmeSettings,
    client: &Arc<ClientConfig>,
    account_key: &[u8],
    board: &Board,
) -> Result<Vec<u8>, String> {
    let directory = Directory::discover(client, &settings.directory)
        .await
        .map_err(fail("directory"))?;
    let account = Account::create_with_keypair(client, directory, &settings.contact, account_key)
        .await
        .map_err(fail("account"))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| format!("certificate key: {e}"))?;
    let mut params = CertificateParams::new(settings.domains.clone()).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| format!("CSR: {e}"))?;
    let (url, mut order) = account
        .new_order(client, settings.domains.clone())
        .await
        .map_err(fail("new order"))?;
    tracing::info!(domains = ?settings.domains, "ACME: order placed by this node");
    let mut polls = POLLS.iter();
    loop {
        order = match order.status {
            OrderStatus::Pending => {
                for auth in &order.authorizations {
                    authorize(settings.challenge, client, &account, auth, board).await?;
                }
                account.order(client, &url).await.map_err(fail("order"))?
            }
            OrderStatus::Processing => {
                let wait = polls.next().ok_or("the CA kept the order processing")?;
                tokio::time::sleep(Duration::from_millis(*wait)).await;
                account.order(client, &url).await.map_err(fail("order"))?
            }
            OrderStatus::Ready => account
                .finalize(client, &order.finalize, csr.der())
                .await
                .map_err(fail("finalize"))?,
            OrderStatus::Valid { certificate } => {
                let chain = account
                    .certificate(client, &certificate)
                    .await
                    .map_err(fail("certificate download"))?;
                return Ok(format!("{}\n{chain}", key.serialize_pem()).into_bytes());
            }
            OrderStatus::Invalid => {
                let why = order.error.and_then(|p| p.detail).unwrap_or_default();
                return Err(format!("the CA marked the order invalid: {why}"));
            }
        };
    }
}

/// Answers one authorization: publishes the answer, asks the CA to validate, waits for it.
async fn authorize(
    kind: AcmeChallenge,
    client: &Arc<ClientConfig>,
    account: &Account,
    url: &str,
    board: &Board,
) -> Result<(), String> {
    let auth = account.auth(client, url).await.map_err(fail("authorization"))?;
    match auth.status {
        AuthStatus::Valid => return Ok(()),
        AuthStatus::Pending => {}
        other => return Err(format!("authorization is {other:?}")),
    }
    let Identifier::Dns(domain) = auth.identifier;
    let challenge_url = match kind {
        AcmeChallenge::Http01 => {
            let (ch, key_auth) = account.http_01(&auth.challenges).map_err(fail("http-01"))?;
            board.publish_http01(&ch.token, &key_auth).await;
            ch.url.clone()
        }
        AcmeChallenge::TlsAlpn01 => {
            let ch = auth
                .challenges
                .iter()
                .find(|c| c.typ == ChallengeType::TlsAlpn01)
                .ok_or("the CA offers no tls-alpn-01 challenge")?;
            let (pem, ck) = alpn_certificate(account, &domain, &ch.token)?;
            board.publish_alpn(&domain, &pem, Arc::new(ck)).await;
            ch.url.clone()
        }
    };
    account
        .challenge(client, &challenge_url)
        .await
        .map_err(fail("challenge"))?;
    for wait in POLLS {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let auth = account.auth(client, url).await.map_err(fail("authorization"))?;
        match auth.status {
            AuthStatus::Valid => return Ok(()),
            AuthStatus::Pending => {}
            other => {
                let why: Vec<String> = auth
                    .challenges
                    .iter()
                    .filter_map(|c| c.error.as_ref().and_then(|p| p.detail.clone()))
                    .collect();
                return Err(format!("validation of {domain} failed ({other:?}): {}", why.join("; ")));
            }
        }
    }
    Err(format!("validation of {domain} still pending"))
}

/// The tls-alpn-01 certificate for `domain` (RFC 8737): self-signed, with the SHA-256 of the
/// key authorization in its acmeIdentifier extension. Returns its PEM (key, then certificate)
/// for the other nodes and the certified key for this one.
fn alpn_certificate(
    account: &Account,
    domain: &str,
    token: &str,
) -> Result<(Vec<u8>, rustls::sign::CertifiedKey), String> {
    // the key authorization is the same function of the token for every challenge type
    let probe = Challenge {
        typ: ChallengeType::Http01,
        url: String::new(),
        token: token.to_string(),
        error: None,
    };
    let (_, key_auth) = account
        .http_01(std::slice::from_ref(&probe))
        .map_err(fail("key authorization"))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_auth.as_bytes());
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(|e| format!("tls-alpn-01: {e}"))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| format!("tls-alpn-01: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("tls-alpn-01: {e}"))?;
    let pem = format!("{}\n{}", key.serialize_pem(), cert.pem()).into_bytes();
    let (ck, _) = crate::pem::certified_key(&pem)?;
    Ok((pem, ck))
}
