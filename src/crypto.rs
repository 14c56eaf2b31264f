//! Sealing of credentials at rest (AES-256-GCM): tenant-database URLs and
//! integrations' credentials.
//!
//! Sealed layout: `version (1) ‖ key id length (1) ‖ key id ‖ nonce (12) ‖
//! ciphertext+tag`. The associated data binds the merchant and the purpose
//! (for an integration, its id too), so a value copied to another
//! merchant's row, another integration's or used for another purpose does
//! not open. Several keys may be configured; the first is active and seals,
//! all of them open.
//!
//! [`Keyring::fingerprint`] is a short keyed digest of a plaintext
//! (HMAC-SHA256 under a key derived from the active key), shown instead of
//! a credential: it tells two values apart without revealing either, and
//! cannot be checked against a guess without the key.

use std::sync::Arc;

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// What a sealed value is for; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    TenantDatabaseUrl,
    /// The credentials of one integration (its id). A platform default
    /// (no merchant) is sealed for the nil merchant id.
    IntegrationCredentials {
        integration: Uuid,
    },
    /// The owner URL of one registered database server (its id), sealed for
    /// the nil merchant id.
    ServerUrl {
        server: Uuid,
    },
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::TenantDatabaseUrl => "tenant-database-url",
            Purpose::IntegrationCredentials { .. } => "integration-credentials",
            Purpose::ServerUrl { .. } => "server-url",
        }
    }
}

/// What [`Keyring::fingerprint`] derives its key with, from each AES key.
const FINGERPRINT_LABEL: &[u8] = b"posd:v1:credential-fingerprint";

#[derive(Clone)]
struct NamedKey {
    id: String,
    cipher: Aes256Gcm,
    /// HMAC-SHA256(key, [`FINGERPRINT_LABEL`]): never the AES key itself.
    fingerprint_key: Zeroizing<[u8; 32]>,
}

/// HMAC-SHA256 of `msg` under `key`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(msg);
    let mut out = [0; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The configured AES-256 keys; the first one is active.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<NamedKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed with key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("sealed value does not open (wrong key, merchant or purpose)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Why a key list (`POSD_ENCRYPTION_KEYS`) does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeySpecError {
    #[error("each key must be written `id:base64`")]
    NotIdBase64,
    #[error("key id `{0}` must be 1 to 32 letters, digits, `-` or `_`")]
    BadId(String),
    #[error("key id `{0}` appears twice")]
    DuplicateId(String),
    #[error("key `{0}` is not valid base64")]
    NotBase64(String),
    #[error("key `{id}` is {len} bytes; AES-256 needs 32")]
    WrongLength { id: String, len: usize },
    #[error("no key given")]
    Empty,
}

impl Keyring {
    /// Parses `id:base64,id:base64,...` (each key 32 bytes).
    pub fn parse(spec: &str) -> Result<Self, KeySpecError> {
        let mut keys = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, b64) = item.split_once(':').ok_or(KeySpecError::NotIdBase64)?;
            if id.is_empty()
                || id.len() > 32
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(KeySpecError::BadId(id.to_string()));
            }
            if keys.iter().any(|k: &NamedKey| k.id == id) {
                return Err(KeySpecError::DuplicateId(id.to_string()));
            }
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(b64.trim())
                    .map_err(|_| KeySpecError::NotBase64(id.to_string()))?,
            );
            if bytes.len() != 32 {
                return Err(KeySpecError::WrongLength {
                    id: id.to_string(),
                    len: bytes.len(),
                });
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            let fingerprint_key = Zeroizing::new(hmac_sha256(&bytes, FINGERPRINT_LABEL));
            keys.push(NamedKey {
                id: id.to_string(),
                cipher,
                fingerprint_key,
            });
        }
        if keys.is_empty() {
            return Err(KeySpecError::Empty);
        }
        Ok(Keyring {
            keys: Arc::new(keys),
        })
    }

    /// A fresh random key in the `id:base64` form [`Keyring::parse`] reads.
    pub fn generate_spec(id: &str) -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        format!("{id}:{}", STANDARD.encode(key))
    }

    pub fn active_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The associated data. A tenant database URL's is unchanged since
    /// version 1 (`posd:v1:<merchant>:tenant-database-url`): URLs sealed
    /// before integrations existed still open.
    fn aad(merchant: Uuid, purpose: Purpose) -> String {
        match purpose {
            Purpose::TenantDatabaseUrl => {
                format!("posd:v{VERSION}:{merchant}:{}", purpose.as_str())
            }
            Purpose::IntegrationCredentials { integration } => format!(
                "posd:v{VERSION}:{merchant}:{}:{integration}",
                purpose.as_str()
            ),
            Purpose::ServerUrl { server } => {
                format!("posd:v{VERSION}:{merchant}:{}:{server}", purpose.as_str())
            }
        }
    }

    /// A keyed fingerprint of `plaintext`: the first 16 hex digits (64
    /// bits) of HMAC-SHA256 under a key derived from the active key. Stored
    /// beside a sealed value when it is set, so that a rotation does not
    /// change it; the same value set again after a rotation shows another.
    pub fn fingerprint(&self, plaintext: &[u8]) -> String {
        let mac = hmac_sha256(&*self.keys[0].fingerprint_key, plaintext);
        mac[..8].iter().fold(String::with_capacity(16), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Seals `plaintext` under the active key for this merchant and purpose.
    pub fn seal(
        &self,
        merchant: Uuid,
        purpose: Purpose,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let key = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = Self::aad(merchant, purpose);
        let ct = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + ct.len());
        out.push(VERSION);
        // Key ids are at most 32 bytes (checked in `parse`).
        out.push(u8::try_from(key.id.len()).map_err(|_| CryptoError::Seal)?);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The id of the key a value was sealed with (read from its header).
    pub fn sealed_key_id(sealed: &[u8]) -> Result<&str, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        if version != VERSION || rest.len() < usize::from(id_len) + NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        std::str::from_utf8(&rest[..usize::from(id_len)]).map_err(|_| CryptoError::Malformed)
    }

    /// Opens a sealed value; the plaintext is zeroized when dropped.
    pub fn open(
        &self,
        merchant: Uuid,
        purpose: Purpose,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        if version != VERSION || rest.len() < usize::from(id_len) + NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (id, rest) = rest.split_at(usize::from(id_len));
        let id = std::str::from_utf8(id).map_err(|_| CryptoError::Malformed)?;
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_string()))?;
        let aad = Self::aad(merchant, purpose);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let k = ring(&Keyring::generate_spec("k1"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = k.seal(a, Purpose::TenantDatabaseUrl, b"secret").unwrap();
        assert_eq!(
            &*k.open(a, Purpose::TenantDatabaseUrl, &sealed).unwrap(),
            b"secret"
        );
        assert_eq!(
            k.open(b, Purpose::TenantDatabaseUrl, &sealed),
            Err(CryptoError::Open)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            k.open(a, Purpose::TenantDatabaseUrl, &tampered),
            Err(CryptoError::Open)
        );
    }

    #[test]
    fn old_keys_open_new_key_seals() {
        let old = Keyring::generate_spec("old");
        let new = Keyring::generate_spec("new");
        let m = Uuid::new_v4();
        let sealed = ring(&old)
            .seal(m, Purpose::TenantDatabaseUrl, b"x")
            .unwrap();
        let both = ring(&format!("{new},{old}"));
        assert_eq!(both.active_key_id(), "new");
        assert_eq!(
            &*both.open(m, Purpose::TenantDatabaseUrl, &sealed).unwrap(),
            b"x"
        );
        assert_eq!(
            ring(&new).open(m, Purpose::TenantDatabaseUrl, &sealed),
            Err(CryptoError::UnknownKey("old".into()))
        );
    }

    #[test]
    fn sealed_for_one_merchant_does_not_open_for_another_or_another_purpose() {
        let k = ring(&Keyring::generate_spec("k1"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = k
            .seal(a, Purpose::TenantDatabaseUrl, b"postgres://u:pw@h/db")
            .unwrap();
        assert_eq!(Keyring::sealed_key_id(&sealed), Ok("k1"));
        assert_eq!(
            k.open(b, Purpose::TenantDatabaseUrl, &sealed),
            Err(CryptoError::Open)
        );
        assert!(!sealed.windows(2).any(|w| w == b"pw"));
        assert_eq!(Keyring::sealed_key_id(b"\x01"), Err(CryptoError::Malformed));
    }

    #[test]
    fn database_url_aad_is_unchanged() {
        let m = Uuid::nil();
        assert_eq!(
            Keyring::aad(m, Purpose::TenantDatabaseUrl),
            format!("posd:v1:{m}:tenant-database-url")
        );
    }

    #[test]
    fn integration_credentials_bind_merchant_and_integration() {
        let k = ring(&Keyring::generate_spec("k1"));
        let (m, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (integration, another) = (Uuid::new_v4(), Uuid::new_v4());
        let p = Purpose::IntegrationCredentials { integration };
        let sealed = k.seal(m, p, b"{\"apiKey\":\"sk\"}").unwrap();
        assert_eq!(&*k.open(m, p, &sealed).unwrap(), b"{\"apiKey\":\"sk\"}");
        for (merchant, purpose) in [
            (other, p),
            (
                m,
                Purpose::IntegrationCredentials {
                    integration: another,
                },
            ),
            (m, Purpose::TenantDatabaseUrl),
        ] {
            assert_eq!(k.open(merchant, purpose, &sealed), Err(CryptoError::Open));
        }
    }

    #[test]
    fn fingerprints_are_keyed_short_and_stable() {
        let a = ring(&Keyring::generate_spec("a"));
        let b = ring(&Keyring::generate_spec("b"));
        let f = a.fingerprint(b"secret");
        assert_eq!(f.len(), 16);
        assert!(f.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.fingerprint(b"secret"), f);
        assert_ne!(a.fingerprint(b"secret2"), f);
        assert_ne!(b.fingerprint(b"secret"), f);
        let digest = format!("{:x}", <Sha256 as sha2::Digest>::digest(b"secret"));
        assert!(!digest.starts_with(&f));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeySpecError::Empty);
        assert!(
            Keyring::parse("nokey")
                .unwrap_err()
                .to_string()
                .contains("id:base64")
        );
        assert_eq!(
            Keyring::parse("a:AAAA").unwrap_err().to_string(),
            "key `a` is 3 bytes; AES-256 needs 32"
        );
    }
}
