//! Values sealed with the cluster secret: AES-256-GCM under a key derived from the secret by
//! HKDF-SHA256, a random nonce per value, and the Redis key as associated data (a sealed value
//! copied under another key does not open). Layout: `o1`, the 12-byte nonce, then ciphertext
//! and tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 2] = b"o1";
const SALT: &[u8] = b"orta-gateway cluster seal v1";

pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    pub fn new(secret: &[u8]) -> Self {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(secret);
        let okm = prk
            .expand(&[b"aes-256-gcm"], &AES_256_GCM)
            .expect("HKDF output of one AES-256 key is within its limit");
        Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        }
    }

    /// Seals `plain`, bound to the Redis key `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut body,
            )
            .expect("sealing a value in memory does not fail");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a value sealed under `name`; fails on another secret, another key, or tampering.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, &'static str> {
        let rest = sealed.strip_prefix(MAGIC).ok_or("not a sealed value")?;
        if rest.len() < NONCE_LEN + 16 {
            return Err("sealed value too short");
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .map_err(|_| "cannot be opened with this cluster secret")?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_secret_and_under_their_key() {
        let s = Sealer::new(b"0123456789abcdef-secret");
        let sealed = s.seal("p:acme:cert:a", b"-----BEGIN PRIVATE KEY-----");
        assert!(
            !sealed.windows(7).any(|w| w == b"PRIVATE"),
            "the plain text does not show"
        );
        assert_eq!(
            s.open("p:acme:cert:a", &sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert!(s.open("p:acme:cert:b", &sealed).is_err(), "bound to its key");
        assert!(
            Sealer::new(b"another secret, 16+")
                .open("p:acme:cert:a", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open("p:acme:cert:a", &tampered).is_err());
        assert!(s.open("p:acme:cert:a", b"o1short").is_err());
        assert_ne!(s.seal("k", b"x"), s.seal("k", b"x"), "a fresh nonce each time");
    }
}
