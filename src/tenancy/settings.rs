//! A merchant's settings and branding.
//!
//! The control plane stores only the values a merchant set
//! (`merchants.settings`, `merchants.branding`, keyed as the API names
//! them); every other one reads as its default from the code here, so a
//! new setting reaches existing merchants without a data migration. Both
//! are part of the cached tenant context ([`super::context`]).
//!
//! A change is a partial update ([`merge`]): each key given is checked
//! ([`check`]) and replaces the stored value, `null` removes it (back to
//! the default), an unknown key is refused.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest receipt header or footer, in characters.
pub const MAX_RECEIPT_TEXT: usize = 500;
/// The cash rounding steps allowed, in minor units (1 is no rounding).
pub const CASH_ROUNDING_STEPS: [i64; 7] = [1, 2, 5, 10, 20, 50, 100];
/// The longest offline-bill dating window, in hours (90 days).
pub const MAX_OFFLINE_WINDOW_HOURS: i64 = 90 * 24;
/// The longest receipt name, in characters.
pub const MAX_RECEIPT_NAME: usize = 64;
/// The longest logo URL, in characters.
pub const MAX_URL: usize = 2048;

/// A merchant's settings, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Printed at the top of receipts; at most 500 characters.
    #[serde(default)]
    pub receipt_header: Option<String>,
    /// Printed at the bottom of receipts; at most 500 characters.
    #[serde(default)]
    pub receipt_footer: Option<String>,
    /// Whether catalogue prices include tax (default false: tax is added).
    #[serde(default)]
    pub prices_include_tax: bool,
    /// The step cash amounts are rounded to, in minor units: 1 (none, the
    /// default), 2, 5, 10, 20, 50 or 100.
    #[serde(default = "one")]
    pub cash_rounding: i64,
    /// The hour (0 to 23, local time) at which the business day starts;
    /// default 0 (midnight).
    #[serde(default)]
    pub business_day_cutoff_hour: i64,
    /// How old an offline bill may be, in hours (1 to 2160); null is the
    /// server's default window.
    #[serde(default)]
    pub offline_bill_window_hours: Option<i64>,
    /// The largest discount a cashier may give on a line at the catalog's
    /// price, in basis points of the line's amount (0 to 10,000); default
    /// 0: only managers and owners give discounts.
    #[serde(default)]
    pub cashier_discount_limit_bps: i64,
}

fn one() -> i64 {
    1
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            receipt_header: None,
            receipt_footer: None,
            prices_include_tax: false,
            cash_rounding: one(),
            business_day_cutoff_hour: 0,
            offline_bill_window_hours: None,
            cashier_discount_limit_bps: 0,
        }
    }
}

/// A merchant's branding; null is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Branding {
    /// An `https` URL of the merchant's logo.
    #[serde(default)]
    pub logo_url: Option<String>,
    /// `#rrggbb`, lowercase.
    #[serde(default)]
    pub primary_color: Option<String>,
    /// `#rrggbb`, lowercase.
    #[serde(default)]
    pub accent_color: Option<String>,
    /// The name printed on receipts; at most 64 characters.
    #[serde(default)]
    pub receipt_name: Option<String>,
    /// An email address for customers.
    #[serde(default)]
    pub support_email: Option<String>,
    /// A phone number for customers: digits, spaces and `+-().`.
    #[serde(default)]
    pub support_phone: Option<String>,
}

/// Which of the two documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Settings,
    Branding,
}

impl Settings {
    /// The settings from their stored form; an invalid stored value is an
    /// error (the database was changed behind posd's back).
    pub fn from_stored(v: &Value) -> Result<Settings, String> {
        stored(Kind::Settings, v)
    }
}

impl Branding {
    pub fn from_stored(v: &Value) -> Result<Branding, String> {
        stored(Kind::Branding, v)
    }
}

fn stored<T: serde::de::DeserializeOwned>(kind: Kind, v: &Value) -> Result<T, String> {
    let map = v.as_object().ok_or("is not an object")?;
    for (k, v) in map {
        check(kind, k, v).map_err(|e| format!("{k}: {e}"))?;
    }
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

fn text(v: &Value, max: usize) -> Result<Value, String> {
    let s = v.as_str().ok_or("must be a string")?;
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let s = s.trim();
    if s.is_empty() {
        return Err("must not be blank (send null to remove it)".into());
    }
    // Receipt texts may span lines; nothing else may hold a control
    // character.
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters".into());
    }
    Ok(Value::String(s.to_string()))
}

fn one_line(v: &Value, max: usize) -> Result<Value, String> {
    let t = text(v, max)?;
    if t.as_str().is_some_and(|s| s.contains('\n')) {
        return Err("must be one line".into());
    }
    Ok(t)
}

fn int(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = v.as_i64().ok_or("must be a whole number")?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not from {min} to {max}"))
    }
}

fn color(v: &Value) -> Result<Value, String> {
    let s = v.as_str().ok_or("must be a string")?;
    let ok = s.len() == 7 && s.starts_with('#') && s.bytes().skip(1).all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(Value::String(s.to_ascii_lowercase()))
    } else {
        Err("must be a colour as #rrggbb".into())
    }
}

fn https_url(v: &Value) -> Result<Value, String> {
    let s = v.as_str().ok_or("must be a string")?;
    if s.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let u = url::Url::parse(s).map_err(|_| "must be an https URL".to_string())?;
    if u.scheme() != "https" || u.host_str().is_none_or(str::is_empty) {
        return Err("must be an https URL".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not hold credentials".into());
    }
    Ok(Value::String(u.to_string()))
}

fn email(v: &Value) -> Result<Value, String> {
    let s = one_line(v, 320)?;
    let t = s.as_str().unwrap_or_default();
    let ok = t.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
    }) && !t.chars().any(char::is_whitespace);
    if ok {
        Ok(s)
    } else {
        Err("must be an email address".into())
    }
}

fn phone(v: &Value) -> Result<Value, String> {
    let s = one_line(v, 32)?;
    let t = s.as_str().unwrap_or_default();
    let digits = t.chars().filter(char::is_ascii_digit).count();
    let ok = digits >= 3
        && t.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if ok {
        Ok(s)
    } else {
        Err("must be a phone number: digits, spaces and +-().".into())
    }
}

/// Checks one value (not null) of `key`; answers it normalised, or what
/// is wrong.
pub fn check(kind: Kind, key: &str, v: &Value) -> Result<Value, String> {
    match (kind, key) {
        (Kind::Settings, "receiptHeader" | "receiptFooter") => text(v, MAX_RECEIPT_TEXT),
        (Kind::Settings, "pricesIncludeTax") => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| "must be true or false".into()),
        (Kind::Settings, "cashRounding") => {
            let n = int(v, 1, 100)?;
            if CASH_ROUNDING_STEPS.contains(&n) {
                Ok(n.into())
            } else {
                Err(format!("must be one of {CASH_ROUNDING_STEPS:?}"))
            }
        }
        (Kind::Settings, "businessDayCutoffHour") => int(v, 0, 23).map(Value::from),
        (Kind::Settings, "offlineBillWindowHours") => {
            int(v, 1, MAX_OFFLINE_WINDOW_HOURS).map(Value::from)
        }
        (Kind::Settings, "cashierDiscountLimitBps") => int(v, 0, 10_000).map(Value::from),
        (Kind::Branding, "logoUrl") => https_url(v),
        (Kind::Branding, "primaryColor" | "accentColor") => color(v),
        (Kind::Branding, "receiptName") => one_line(v, MAX_RECEIPT_NAME),
        (Kind::Branding, "supportEmail") => email(v),
        (Kind::Branding, "supportPhone") => phone(v),
        (Kind::Settings, _) => Err("is not a setting".into()),
        (Kind::Branding, _) => Err("is not a branding field".into()),
    }
}

/// `stored` with `patch` applied: each key checked and set, `null`
/// removing it. The first invalid key is the error, as `(key, reason)`.
pub fn merge(
    kind: Kind,
    stored: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, (String, String)> {
    let mut out = stored.clone();
    for (k, v) in patch {
        if v.is_null() {
            // Even to reset it, the key must be one.
            if let Err(e) = check(kind, k, &Value::Bool(false))
                && e.starts_with("is not")
            {
                return Err((k.clone(), e));
            }
            out.remove(k);
        } else {
            let v = check(kind, k, v).map_err(|e| (k.clone(), e))?;
            out.insert(k.clone(), v);
        }
    }
    Ok(out)
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
    fn defaults_fill_what_is_not_stored() {
        assert_eq!(
            Settings::from_stored(&json!({})).unwrap(),
            Settings::default()
        );
        let s = Settings::from_stored(&json!({ "cashRounding": 5 })).unwrap();
        assert_eq!(s.cash_rounding, 5);
        assert_eq!(s.cashier_discount_limit_bps, 0);
        assert_eq!(
            Branding::from_stored(&json!({})).unwrap(),
            Branding::default()
        );
        assert!(Settings::from_stored(&json!({ "cashRounding": 3 })).is_err());
        assert!(Settings::from_stored(&json!({ "nope": 3 })).is_err());
    }

    #[test]
    fn merge_checks_normalises_and_resets() {
        let stored = obj(json!({ "cashRounding": 5, "receiptHeader": "Hi" }));
        let out = merge(
            Kind::Settings,
            &stored,
            &obj(json!({ "cashRounding": null, "receiptFooter": "  Bye  " })),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({ "receiptHeader": "Hi", "receiptFooter": "Bye" })
        );
        for (k, v) in [
            ("cashRounding", json!(3)),
            ("cashRounding", json!("5")),
            ("businessDayCutoffHour", json!(24)),
            ("offlineBillWindowHours", json!(0)),
            ("cashierDiscountLimitBps", json!(10_001)),
            ("pricesIncludeTax", json!(1)),
            ("receiptHeader", json!("x".repeat(501))),
            ("receiptHeader", json!("   ")),
            ("unknown", json!(1)),
            ("unknown", Value::Null),
        ] {
            let e = merge(Kind::Settings, &stored, &obj(json!({ k: v }))).unwrap_err();
            assert_eq!(e.0, k);
        }
        for (k, v) in [
            ("logoUrl", json!("http://example.com/logo.png")),
            ("logoUrl", json!("javascript:alert(1)")),
            ("logoUrl", json!("https://user:pw@example.com/")),
            ("primaryColor", json!("red")),
            ("accentColor", json!("#12345g")),
            ("receiptName", json!("x".repeat(65))),
            ("supportEmail", json!("no-at-sign")),
            ("supportPhone", json!("call me")),
        ] {
            let e = merge(Kind::Branding, &Map::new(), &obj(json!({ k: v }))).unwrap_err();
            assert_eq!(e.0, k, "{e:?}");
        }
        let b = merge(
            Kind::Branding,
            &Map::new(),
            &obj(json!({
                "logoUrl": "https://cdn.example.com/logo.png",
                "primaryColor": "#AABBCC",
                "supportEmail": "help@example.com",
                "supportPhone": "+44 (0)20 7946-0000",
            })),
        )
        .unwrap();
        assert_eq!(b["primaryColor"], "#aabbcc");
        Branding::from_stored(&Value::Object(b)).unwrap();
    }
}
