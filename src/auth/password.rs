//! Password hashing with Argon2id (the crate's default parameters).

use std::sync::LazyLock;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

/// Hashes a password into a PHC string.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

/// A hash of a password nobody has, verified when the user does not exist so
/// that a wrong email takes as long as a wrong password.
static DUMMY: LazyLock<Option<String>> =
    LazyLock::new(|| hash("posd-dummy-password-for-timing").ok());

/// Verifies `password` against `phc`; with `None`, burns the same time and
/// returns false.
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    let target = phc.or(DUMMY.as_deref());
    let Some(parsed) = target.and_then(|t| PasswordHash::new(t).ok()) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && phc.is_some()
}
