//! Integrations: a merchant's connection to a payment, email, accounting...
//! provider, with its settings and its credentials.
//!
//! A merchant has at most one integration per kind; for a kind it has none
//! of, the platform's default applies (a row without a merchant, managed by
//! operators). Credentials are a JSON object of strings (`{"apiKey": ...}`)
//! stored sealed only ([`crate::crypto`]: the associated data binds the
//! merchant, the nil id for the platform, the integration and the purpose),
//! with a keyed fingerprint and when they were set. They are written, never
//! read back, through the API, and never logged: in memory they are a
//! [`SecretString`], which does not print. [`resolve`] is how code that
//! calls a provider gets the integration in effect, credentials opened.
//!
//! Integrations are not part of the cached tenant context: credentials
//! stay out of the cache, and each use reads the control plane.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    crypto::{CryptoError, Keyring, Purpose},
    db::{
        ids::{IntegrationId, MerchantId},
        platform::{
            Platform,
            integrations::{IntegrationRow, SealedCredentials},
        },
    },
};

/// The largest settings object, serialized, in bytes.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;
/// The largest credentials object, serialized, in bytes.
pub const MAX_CREDENTIALS_BYTES: usize = 8 * 1024;
/// The longest credential name (a key of the credentials object).
pub const MAX_CREDENTIAL_NAME: usize = 64;

/// What an integration is for: a closed list (the table's CHECK holds the
/// same one).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[schema(as = IntegrationKind)]
pub enum Kind {
    Payment,
    Email,
    Sms,
    Accounting,
    Shipping,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Payment,
        Kind::Email,
        Kind::Sms,
        Kind::Accounting,
        Kind::Shipping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Payment => "payment",
            Kind::Email => "email",
            Kind::Sms => "sms",
            Kind::Accounting => "accounting",
            Kind::Shipping => "shipping",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Whose integration it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = IntegrationSource)]
pub enum Source {
    /// The merchant's own.
    Merchant,
    /// The platform's default for a kind the merchant has none of.
    Platform,
}

/// Whether an integration's credentials can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsStatus {
    /// None set.
    Unset,
    /// Set, and they open with the configured keys.
    Set,
    /// Set, but they do not open: sealed with a key no longer configured,
    /// or for another merchant or integration (copied from another row).
    /// Set them again.
    Unreadable,
}

/// Checks a provider name; answers what is wrong.
pub fn check_provider(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
        });
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter or digit".into())
    }
}

/// Checks settings: an object of at most [`MAX_SETTINGS_BYTES`].
pub fn check_settings(v: &Map<String, Value>) -> Result<(), String> {
    let len = serde_json::to_string(v).map_or(usize::MAX, |s| s.len());
    if len > MAX_SETTINGS_BYTES {
        return Err(format!(
            "must be at most {MAX_SETTINGS_BYTES} bytes as JSON"
        ));
    }
    Ok(())
}

/// Checks credentials (a non-empty object of non-empty strings, at most
/// [`MAX_CREDENTIALS_BYTES`] as JSON) and answers them as their JSON
/// text. The reasons never quote a value; an error names the credential
/// as `(name, reason)` (`None`: the object as a whole).
pub fn check_credentials(v: Map<String, Value>) -> Result<SecretString, (Option<String>, String)> {
    if v.is_empty() {
        return Err((None, "must hold at least one credential".into()));
    }
    for (k, v) in &v {
        if k.trim().is_empty() || k.chars().count() > MAX_CREDENTIAL_NAME {
            return Err((
                Some(k.clone()),
                format!("a credential's name must be 1 to {MAX_CREDENTIAL_NAME} characters"),
            ));
        }
        match v.as_str() {
            Some(s) if !s.is_empty() => {}
            Some(_) => return Err((Some(k.clone()), "must not be empty".into())),
            None => return Err((Some(k.clone()), "must be a string".into())),
        }
    }
    let text = serde_json::to_string(&Value::Object(v))
        .map_err(|_| (None, "must be a JSON object".to_string()))?;
    if text.len() > MAX_CREDENTIALS_BYTES {
        return Err((
            None,
            format!("must be at most {MAX_CREDENTIALS_BYTES} bytes as JSON"),
        ));
    }
    Ok(SecretString::from(text))
}

/// The merchant id credentials are sealed for: the nil id for the
/// platform's defaults.
fn sealing_merchant(merchant: Option<MerchantId>) -> Uuid {
    merchant.map_or(Uuid::nil(), |m| m.0)
}

fn purpose(id: IntegrationId) -> Purpose {
    Purpose::IntegrationCredentials { integration: id.0 }
}

/// Seals `credentials` (their JSON text) for integration `id` of
/// `merchant`, under the active key, with their fingerprint.
pub fn seal(
    keyring: &Keyring,
    merchant: Option<MerchantId>,
    id: IntegrationId,
    credentials: &SecretString,
) -> Result<SealedCredentials, CryptoError> {
    let plain = credentials.expose_secret().as_bytes();
    Ok(SealedCredentials {
        sealed: keyring.seal(sealing_merchant(merchant), purpose(id), plain)?,
        key_id: keyring.active_key_id().to_string(),
        fingerprint: keyring.fingerprint(plain),
    })
}

/// Opens a row's credentials (their JSON text); `Ok(None)` when none are
/// set.
pub fn open(keyring: &Keyring, row: &IntegrationRow) -> Result<Option<SecretString>, CryptoError> {
    let Some(sealed) = &row.credentials_sealed else {
        return Ok(None);
    };
    let plain = keyring.open(sealing_merchant(row.merchant_id), purpose(row.id), sealed)?;
    let text = std::str::from_utf8(&plain).map_err(|_| CryptoError::Malformed)?;
    Ok(Some(SecretString::from(text)))
}

/// Whether a row's credentials are set and open (nothing is kept of them).
pub fn credentials_status(keyring: &Keyring, row: &IntegrationRow) -> CredentialsStatus {
    match open(keyring, row) {
        Ok(None) => CredentialsStatus::Unset,
        Ok(Some(_)) => CredentialsStatus::Set,
        Err(e) => {
            tracing::warn!(integration = %row.id, merchant = ?row.merchant_id, error = %e, "integration credentials do not open");
            CredentialsStatus::Unreadable
        }
    }
}

/// The integration in effect for a merchant and a kind, credentials
/// opened. `Debug` prints no credential.
#[derive(Debug, Clone)]
pub struct EffectiveIntegration {
    pub id: IntegrationId,
    pub source: Source,
    pub kind: Kind,
    pub provider: String,
    pub settings: Map<String, Value>,
    /// The credentials object as JSON text; `None` when none are set.
    pub credentials: Option<SecretString>,
    pub credentials_set_at: Option<DateTime<Utc>>,
}

impl EffectiveIntegration {
    /// One credential by name (`"apiKey"`).
    pub fn credential(&self, name: &str) -> Option<SecretString> {
        let text = self.credentials.as_ref()?;
        let map: Map<String, Value> = serde_json::from_str(text.expose_secret()).ok()?;
        map.get(name)?.as_str().map(SecretString::from)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The integration's credentials are set but do not open.
    #[error("the credentials of integration {id} do not open: {error}")]
    Unreadable {
        id: IntegrationId,
        error: CryptoError,
    },
    #[error("a stored integration is invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// The integration of `kind` in effect for `merchant`: its own, else the
/// platform's default, else `None`. Credentials that do not open are an
/// error, never a fall back to the platform's default: a merchant's
/// payments must not silently go through another account.
pub fn resolve(
    p: &mut Platform<'_>,
    keyring: &Keyring,
    merchant: MerchantId,
    kind: Kind,
) -> Result<Option<EffectiveIntegration>, ResolveError> {
    let Some(row) = IntegrationRow::effective(p, merchant, kind.as_str())? else {
        return Ok(None);
    };
    let credentials =
        open(keyring, &row).map_err(|error| ResolveError::Unreadable { id: row.id, error })?;
    let settings = row
        .settings
        .as_object()
        .cloned()
        .ok_or_else(|| ResolveError::Invalid(format!("integration {}: settings", row.id)))?;
    Ok(Some(EffectiveIntegration {
        id: row.id,
        source: if row.merchant_id.is_some() {
            Source::Merchant
        } else {
            Source::Platform
        },
        kind,
        provider: row.provider,
        settings,
        credentials,
        credentials_set_at: row.credentials_set_at,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        assert_eq!(Kind::parse("fax"), None);
    }

    #[test]
    fn providers_and_credentials_are_checked_without_quoting_values() {
        for ok in ["stripe", "mail-gun", "x_1", "0"] {
            check_provider(ok).unwrap();
        }
        for bad in ["", "Stripe", "-x", "a b", &"x".repeat(65)] {
            assert!(check_provider(bad).is_err(), "{bad}");
        }
        let c = check_credentials(obj(json!({ "apiKey": "sk_live_1" }))).unwrap();
        assert_eq!(c.expose_secret(), r#"{"apiKey":"sk_live_1"}"#);
        assert!(!format!("{c:?}").contains("sk_live"));
        assert_eq!(check_credentials(Map::new()).unwrap_err().0, None);
        let e = check_credentials(obj(json!({ "apiKey": 12_345 }))).unwrap_err();
        assert_eq!(e.0.as_deref(), Some("apiKey"));
        assert!(!e.1.contains("12345"));
        let e = check_credentials(obj(json!({ "apiKey": "" }))).unwrap_err();
        assert_eq!(e.0.as_deref(), Some("apiKey"));
        let big = "x".repeat(MAX_CREDENTIALS_BYTES);
        assert_eq!(
            check_credentials(obj(json!({ "k": big }))).unwrap_err().0,
            None
        );
        let big = "x".repeat(MAX_SETTINGS_BYTES);
        assert!(check_settings(&obj(json!({ "k": big }))).is_err());
        check_settings(&obj(json!({ "from": "shop@example.com" }))).unwrap();
    }
}
