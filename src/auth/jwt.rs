//! JSON Web Tokens: HS256 only, `iss`, `aud`, `exp`, `sub` and `iat`
//! required, a small leeway; a token whose `nbf` or `iat` lies ahead is
//! refused. Staff tokens have `aud = "posd"`, operator tokens
//! `aud = "posd-admin"`; each is refused where the other is expected.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::Role;
use crate::db::ids::{MerchantId, StaffId};

pub const ISSUER: &str = "posd";
pub const STAFF_AUDIENCE: &str = "posd";
pub const ADMIN_AUDIENCE: &str = "posd-admin";
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaffClaims {
    pub sub: StaffId,
    pub mid: MerchantId,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminClaims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    staff: Validation,
    admin: Validation,
}

fn validation(audience: &str) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v
}

/// A token issued in the future is forged or from a clock gone wrong.
fn issued_in_the_past(iat: i64) -> Result<(), jsonwebtoken::errors::Error> {
    let ahead = i64::try_from(LEEWAY_SECS).unwrap_or(i64::MAX);
    if iat > Utc::now().timestamp().saturating_add(ahead) {
        Err(jsonwebtoken::errors::ErrorKind::ImmatureSignature.into())
    } else {
        Ok(())
    }
}

impl JwtKeys {
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            staff: validation(STAFF_AUDIENCE),
            admin: validation(ADMIN_AUDIENCE),
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        v: &Validation,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<T>(token, &self.decoding, v).map(|d| d.claims)
    }

    /// A staff token; returns it with its expiry (unix seconds).
    pub fn issue_staff(
        &self,
        staff: StaffId,
        merchant: MerchantId,
        role: Role,
        ttl: Duration,
    ) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let claims = StaffClaims {
            sub: staff,
            mid: merchant,
            role,
            iss: ISSUER.into(),
            aud: STAFF_AUDIENCE.into(),
            exp,
            iat: now,
        };
        self.sign(&claims).map(|t| (t, exp))
    }

    pub fn issue_admin(
        &self,
        operator: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        self.sign(&AdminClaims {
            sub: operator.into(),
            iss: ISSUER.into(),
            aud: ADMIN_AUDIENCE.into(),
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            iat: now,
        })
    }

    pub fn verify_staff(&self, token: &str) -> Result<StaffClaims, jsonwebtoken::errors::Error> {
        let c: StaffClaims = self.verify(token, &self.staff)?;
        issued_in_the_past(c.iat).map(|()| c)
    }

    pub fn verify_admin(&self, token: &str) -> Result<AdminClaims, jsonwebtoken::errors::Error> {
        let c: AdminClaims = self.verify(token, &self.admin)?;
        issued_in_the_past(c.iat).map(|()| c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&SecretString::from("k".repeat(40)))
    }

    #[test]
    fn staff_and_admin_tokens_do_not_cross() {
        let k = keys();
        let (staff, _) = k
            .issue_staff(
                StaffId(uuid::Uuid::new_v4()),
                MerchantId(uuid::Uuid::new_v4()),
                Role::Cashier,
                Duration::from_secs(60),
            )
            .unwrap();
        let admin = k.issue_admin("ops", Duration::from_secs(60)).unwrap();
        assert!(k.verify_staff(&staff).is_ok());
        assert!(k.verify_admin(&admin).is_ok());
        assert!(k.verify_staff(&admin).is_err());
        assert!(k.verify_admin(&staff).is_err());
    }

    #[test]
    fn tokens_from_the_future_are_refused() {
        let k = keys();
        let now = Utc::now().timestamp();
        let claims = |nbf: Option<i64>, iat: i64| {
            let mut c = serde_json::json!({
                "sub": uuid::Uuid::new_v4(), "mid": uuid::Uuid::new_v4(), "role": "owner",
                "iss": ISSUER, "aud": STAFF_AUDIENCE, "exp": now + 600, "iat": iat,
            });
            if let Some(n) = nbf {
                c["nbf"] = n.into();
            }
            k.sign(&c).unwrap()
        };
        assert!(k.verify_staff(&claims(None, now)).is_ok());
        assert!(k.verify_staff(&claims(Some(now - 10), now)).is_ok());
        let year = 365 * 24 * 3600;
        for t in [claims(Some(now + year), now), claims(None, now + year)] {
            assert_eq!(
                k.verify_staff(&t).unwrap_err().kind(),
                &jsonwebtoken::errors::ErrorKind::ImmatureSignature
            );
        }
    }
}
