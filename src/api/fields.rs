//! Validated request fields.
//!
//! Each type here checks its value while a body is parsed, so a handler
//! only ever sees valid input, and describes the same limits (lengths,
//! ranges, patterns) in the OpenAPI document from the same constants: the
//! contract that generated clients and fuzzers read cannot drift from what
//! the server enforces.
//!
//! A value out of its limits fails the parse with a message that starts
//! with `invalid value:`; [`super::parse`] answers those 422
//! `validation_failed` naming the field, and malformed JSON or a wrong type
//! 422 `invalid_body`.

use serde::{Deserialize, Deserializer, Serialize, de};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type},
    },
};

use crate::pos::{checkout, pricing};

/// A JSON Schema pattern: no control character (C0, DEL, C1) anywhere.
const NO_CONTROLS: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// The same, and at least one character that is not white space.
const NOT_BLANK: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A value outside its limits (see the module docs).
pub fn invalid<E: de::Error>(reason: impl std::fmt::Display) -> E {
    E::custom(format_args!("invalid value: {reason}"))
}

/// Trims `s` and checks it against the limits of a text field.
fn check_text<E: de::Error>(s: &str, max: usize, required: bool) -> Result<String, E> {
    if s.chars().count() > max {
        return Err(invalid(format_args!("must be at most {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    let s = s.trim();
    if required && s.is_empty() {
        return Err(invalid("must not be blank"));
    }
    Ok(s.to_string())
}

fn text_schema(max: usize, required: bool) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(required.then_some(1))
        .max_length(Some(max))
        .pattern(Some(if required { NOT_BLANK } else { NO_CONTROLS }))
        .into()
}

/// Defines a text field type: at most `max` characters, no control
/// characters, trimmed; `required` ones must not be blank, the others read
/// as absent when blank (see [`opt`]).
macro_rules! text_field {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, required = $req:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                check_text(&s, $max, $req).map($name)
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                text_schema($max, $req)
            }
        }

        impl ToSchema for $name {}
    };
}

/// A JSON number that is a whole number. JSON Schema counts `12.0` as an
/// integer, so the server does too; `12.5` is a type error.
struct Integral;

impl de::Visitor<'_> for Integral {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| invalid(format_args!("{v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Exact up to 2^53, far beyond every bound here.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            #[expect(
                clippy::as_conversions,
                clippy::cast_possible_truncation,
                reason = "whole and within 2^53; std has no float-to-integer conversion"
            )]
            Ok(v as i64)
        } else {
            Err(de::Error::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
}

/// A field's bound as the OpenAPI document writes it: a JSON Schema number.
fn schema_bound(v: impl Into<i64>) -> f64 {
    let v: i64 = v.into();
    #[expect(
        clippy::as_conversions,
        clippy::cast_precision_loss,
        reason = "every bound is far below 2^53, so f64 holds it exactly; std has no i64-to-f64 conversion"
    )]
    let bound = v as f64;
    bound
}

/// Defines an integer field type with an inclusive range.
macro_rules! int_field {
    ($(#[$doc:meta])* $name:ident: $t:ty, $format:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name($t);

        impl $name {
            pub const MIN: $t = $min;
            pub const MAX: $t = $max;

            pub fn get(self) -> $t {
                self.0
            }

            /// `v` if it is within the bounds.
            pub fn new(v: $t) -> Option<Self> {
                (Self::MIN..=Self::MAX).contains(&v).then_some($name(v))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = <$t>::try_from(d.deserialize_any(Integral)?)
                    .map_err(|_| invalid::<D::Error>("is out of range"))?;
                if (Self::MIN..=Self::MAX).contains(&v) {
                    Ok($name(v))
                } else {
                    Err(invalid(format_args!(
                        "{v} is not from {} to {}",
                        Self::MIN,
                        Self::MAX
                    )))
                }
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::$format)))
                    .minimum(Some(schema_bound(Self::MIN)))
                    .maximum(Some(schema_bound(Self::MAX)))
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

text_field!(
    /// A name: 1 to 200 characters.
    Name, max = 200, required = true
);
text_field!(
    /// A product's stock-keeping unit: 1 to 64 characters.
    Sku, max = 64, required = true
);
text_field!(
    /// A category's name: 1 to 100 characters.
    CategoryName, max = 100, required = true
);
text_field!(
    /// A short free text (a payment reference, a phone number): at most 100
    /// characters; blank means none.
    ShortText, max = 100, required = false
);
text_field!(
    /// A note: at most 500 characters; blank means none.
    Note, max = 500, required = false
);
text_field!(
    /// A customer note: at most 2,000 characters; blank means none.
    LongNote, max = 2000, required = false
);
text_field!(
    /// An email address as typed, for a login: at most 320 characters.
    EmailText, max = 320, required = false
);
text_field!(
    /// A password as typed: at most 1,024 characters, no control characters.
    PasswordText, max = 1024, required = false
);
text_field!(
    /// A short identifier (a merchant slug, a plan, a time zone, a currency
    /// code as typed): 1 to 64 characters.
    Token64, max = 64, required = true
);

int_field!(
    /// A quantity of units on a line: 1 to 100,000.
    Quantity: i32, Int32, 1, checkout::MAX_QUANTITY
);
int_field!(
    /// A unit price in minor units: 0 to 100,000,000,000.
    UnitPrice: i64, Int64, 0, pricing::MAX_UNIT_PRICE
);
int_field!(
    /// An amount in minor units that may be zero (a discount).
    Amount: i64, Int64, 0, pricing::MAX_AMOUNT
);
int_field!(
    /// An amount in minor units that must be positive (a payment, a refund).
    PositiveAmount: i64, Int64, 1, pricing::MAX_AMOUNT
);
int_field!(
    /// A plan limit: 0 to 10^15 (null, where allowed, is unlimited).
    LimitValue: i64, Int64, 0, 1_000_000_000_000_000
);
int_field!(
    /// A plan's rank: 0 to 1,000,000; higher plans rank higher.
    PlanRank: i32, Int32, 0, 1_000_000
);
int_field!(
    /// A rollout share: 0 to 100 %.
    RolloutPercent: i16, Int32, 0, 100
);
int_field!(
    /// A tax rate in basis points: 0 to 10,000 (100 %).
    TaxRateBps: i32, Int32, 0, 10_000
);
int_field!(
    /// A line number of an order: 1 to 200 (`checkout::MAX_LINES`).
    LineNo: i32, Int32, 1, 200
);
int_field!(
    /// A category's position in lists.
    SortOrder: i32, Int32, -1_000_000, 1_000_000
);
int_field!(
    /// A change of stock in units, either way.
    StockDelta: i64, Int64, -1_000_000_000, 1_000_000_000
);
int_field!(
    /// Units received: a positive change of stock.
    Received: i64, Int64, 1, 1_000_000_000
);
int_field!(
    /// Units lost: a negative change of stock.
    Removed: i64, Int64, -1_000_000_000, -1
);
int_field!(
    /// A counted stock level in units.
    StockCount: i64, Int64, 0, 1_000_000_000
);
int_field!(
    /// How many items a page holds.
    PageLimit: i64, Int64, 1, crate::api::params::MAX_LIMIT
);

/// A query parameter's schema only: the parameter is parsed in
/// [`crate::api::params`], beside the bounds this describes.
macro_rules! param_schema {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $name {}
    };
}

param_schema!(
    /// A day, `YYYY-MM-DD`, from 2000-01-01 to 2099-12-31.
    Day,
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .pattern(Some(crate::api::params::DAY_PATTERN))
);
param_schema!(
    /// An RFC 3339 time from 2000 to 2099.
    Instant,
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .pattern(Some(crate::api::params::INSTANT_PATTERN))
);
param_schema!(
    /// A cursor of the audit trail (`nextCursor` of the previous page).
    AuditCursor,
    string().pattern(Some("^(s[0-9a-f]{45}|o[0-9a-f]{28})$"))
);
param_schema!(
    /// A window of whole minutes, `1m` to `15m`.
    WindowMinutes,
    string().pattern(Some("^([1-9]|1[0-5])m$"))
);
param_schema!(
    /// A search text: at most 100 characters.
    SearchText,
    string()
        .max_length(Some(crate::api::params::MAX_SEARCH))
        .pattern(Some(NO_CONTROLS))
);

/// Defines a text type checked by `$check` (a `fn(&str) -> Result<String,
/// &'static str>` that normalises the value or says what is wrong) and
/// described by `$schema`.
macro_rules! checked_text {
    ($(#[$doc:meta])* $name:ident, $check:expr, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let check: fn(&str) -> Result<String, &'static str> = $check;
                check(&s).map($name).map_err(invalid)
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $name {}
    };
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

checked_text!(
    /// A merchant's slug: 2 to 63 lowercase letters, digits or `-`, not
    /// starting with `-`.
    Slug,
    |s| {
        if crate::config::is_slug(s, 2) {
            Ok(s.to_string())
        } else {
            Err("must be 2 to 63 lowercase letters, digits or '-', not starting with '-'")
        }
    },
    string()
        .min_length(Some(2))
        .max_length(Some(63))
        .pattern(Some("^[a-z0-9][a-z0-9-]{1,62}$"))
);

checked_text!(
    /// A domain name of two labels or more, such as `shop.example.com`
    /// (read lower-cased): labels of 1 to 63 letters, digits and inner
    /// hyphens, the last one starting with a letter; 253 characters at most.
    DomainName,
    |s| {
        let name = s.to_ascii_lowercase();
        if name.contains('.') && crate::config::is_dns_name(&name) {
            Ok(name)
        } else {
            Err("must be a domain name such as shop.example.com")
        }
    },
    string()
        .min_length(Some(3))
        .max_length(Some(253))
        .pattern(Some("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"))
);

checked_text!(
    /// A plan's key: 1 to 64 lowercase letters, digits, `-` or `_`, not
    /// starting with `-` or `_`.
    PlanKey,
    |s| {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
            && !s.starts_with(['-', '_']);
        if ok {
            Ok(s.to_string())
        } else {
            Err("must be 1 to 64 lowercase letters, digits, '-' or '_', not starting with '-' or '_'")
        }
    },
    string()
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[a-z0-9][a-z0-9_-]{0,63}$"))
);

checked_text!(
    /// A database server's name: 1 to 63 lowercase letters, digits or `-`,
    /// not starting with `-` (`default` names the default server).
    ServerName,
    |s| {
        if crate::config::is_slug(s, 1) {
            Ok(s.to_string())
        } else {
            Err("must be 1 to 63 lowercase letters, digits or '-', not starting with '-'")
        }
    },
    string()
        .min_length(Some(1))
        .max_length(Some(63))
        .pattern(Some("^[a-z0-9][a-z0-9-]{0,62}$"))
);

checked_text!(
    /// A feature flag's key: 1 to 64 lowercase letters, digits or `_`,
    /// starting with a letter.
    FlagKey,
    |s| {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            && s.starts_with(|c: char| c.is_ascii_lowercase());
        if ok {
            Ok(s.to_string())
        } else {
            Err("must be 1 to 64 lowercase letters, digits or '_', starting with a letter")
        }
    },
    string()
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[a-z][a-z0-9_]{0,63}$"))
);

checked_text!(
    /// An ISO 4217 currency code such as `EUR`.
    CurrencyCode,
    |s| match iso_currency::Currency::from_code(s) {
        Some(c) => Ok(c.code().to_string()),
        None => Err("must be an ISO 4217 currency code such as USD"),
    },
    string().enum_values(Some(
        <iso_currency::Currency as iso_currency::IntoEnumIterator>::iter()
            .map(|c| c.code())
    ))
);

checked_text!(
    /// An IANA time zone such as `Europe/Paris`.
    TimeZone,
    |s| match s.trim().parse::<chrono_tz::Tz>() {
        Ok(tz) => Ok(tz.name().to_string()),
        Err(_) => Err("must be an IANA time zone such as Europe/Paris"),
    },
    string().max_length(Some(64)).examples(["Europe/Paris", "UTC"])
);

/// An email address: a local part and a domain with a dot inside it, no
/// white space; trimmed and lower-cased. `allow_blank` lets "" through.
fn email(s: &str, allow_blank: bool) -> Result<String, &'static str> {
    let e = s.trim().to_lowercase();
    if allow_blank && e.is_empty() {
        return Ok(e);
    }
    let no_space = |p: &str| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c == '@');
    let ok = e.len() <= 320
        && e.split_once('@').is_some_and(|(l, d)| {
            no_space(l)
                && no_space(d)
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
        });
    if ok {
        Ok(e)
    } else {
        Err("is not an email address")
    }
}

const EMAIL: &str = "^[^\\s@]+@[^\\s@.][^\\s@]*\\.[^\\s@]*[^\\s@.]$";
const EMAIL_OR_BLANK: &str = "^([^\\s@]+@[^\\s@.][^\\s@]*\\.[^\\s@]*[^\\s@.])?$";

checked_text!(
    /// An email address, trimmed and lower-cased.
    Email,
    |s| email(s, false),
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(320))
        .pattern(Some(EMAIL))
);

checked_text!(
    /// An email address, or blank for none.
    OptionalEmail,
    |s| email(s, true),
    string().max_length(Some(320)).pattern(Some(EMAIL_OR_BLANK))
);

checked_text!(
    /// A phone number: at most 40 digits, spaces and `+ - ( ) .`; blank for
    /// none.
    Phone,
    |s| {
        let p = s.trim();
        if p.chars().count() <= 40 && p.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)) {
            Ok(p.to_string())
        } else {
            Err("may hold only digits, spaces and + - ( ) ., at most 40")
        }
    },
    string().max_length(Some(40)).pattern(Some("^[0-9 +().-]*$"))
);

checked_text!(
    /// A new password: 10 to 1,024 characters.
    Password,
    |s| {
        if (10..=1024).contains(&s.chars().count()) {
            Ok(s.to_string())
        } else {
            Err("must be 10 to 1024 characters")
        }
    },
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(10))
        .max_length(Some(1024))
        .pattern(Some(NO_CONTROLS))
);

/// No discount: the default of a line's `discountMinor`.
impl Default for Amount {
    fn default() -> Self {
        Amount(0)
    }
}

/// A tier a merchant can be provisioned onto (every merchant starts on
/// the shared tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OwnTier {
    Schema,
    Dedicated,
}

impl From<OwnTier> for crate::tenancy::Tier {
    fn from(t: OwnTier) -> Self {
        match t {
            OwnTier::Schema => crate::tenancy::Tier::Schema,
            OwnTier::Dedicated => crate::tenancy::Tier::Dedicated,
        }
    }
}

/// An optional text field: blank reads as absent.
pub fn opt<T: Into<String>>(v: Option<T>) -> Option<String> {
    v.map(Into::into).filter(|s| !s.is_empty())
}

macro_rules! into_string {
    ($($t:ty),*) => {$(
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}
into_string!(
    Name,
    Sku,
    CategoryName,
    ShortText,
    Note,
    LongNote,
    EmailText,
    PasswordText,
    Token64,
    OptionalEmail,
    Phone
);

/// Defines a list type of `min` to `max` items of `item`. Derives beyond
/// `Debug` and `Default` come with the attributes (a `Serialize` derive
/// writes the list as a plain array).
macro_rules! list_field {
    ($(#[$doc:meta])* $vis:vis $name:ident: $item:ty, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        $vis struct $name(Vec<$item>);

        impl $name {
            pub const MIN: usize = $min;
            pub const MAX: usize = $max;

            pub fn into_inner(self) -> Vec<$item> {
                self.0
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = <Vec<$item> as ::serde::Deserialize>::deserialize(d)?;
                if (Self::MIN..=Self::MAX).contains(&v.len()) {
                    Ok($name(v))
                } else {
                    Err($crate::api::fields::invalid(format_args!(
                        "must hold {} to {} items",
                        Self::MIN,
                        Self::MAX
                    )))
                }
            }
        }

        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                ::utoipa::openapi::schema::ArrayBuilder::new()
                    .items(::utoipa::openapi::RefOr::Ref(::utoipa::openapi::Ref::from_schema_name(
                        <$item as ::utoipa::ToSchema>::name(),
                    )))
                    .min_items(Some(Self::MIN))
                    .max_items(Some(Self::MAX))
                    .into()
            }
        }

        impl ::utoipa::ToSchema for $name {
            fn schemas(
                schemas: &mut Vec<(
                    String,
                    ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema>,
                )>,
            ) {
                schemas.push((
                    <$item as ::utoipa::ToSchema>::name().into(),
                    <$item as ::utoipa::PartialSchema>::schema(),
                ));
                <$item as ::utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}
pub(crate) use list_field;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limits_are_checked_and_described_alike() {
        let parse = |s: &str| serde_json::from_str::<Sku>(s).map_err(|e| e.to_string());
        assert_eq!(parse("\"  AB-1 \"").unwrap().as_str(), "AB-1");
        assert!(parse("\"   \"").unwrap_err().starts_with("invalid value:"));
        assert!(parse("\"a\\u0000b\"").unwrap_err().contains("control"));
        assert!(parse(&format!("\"{}\"", "x".repeat(65))).is_err());
        assert!(parse(&format!("\"{}\"", "é".repeat(64))).is_ok());
        let q = |s: &str| serde_json::from_str::<Quantity>(s).map_err(|e| e.to_string());
        assert_eq!(q("1").unwrap().get(), 1);
        assert!(q("0").unwrap_err().starts_with("invalid value:"));
        assert_eq!(q("12.0").unwrap().get(), 12);
        assert!(q("1.5").unwrap_err().starts_with("invalid type:"));
        assert!(q("\"1\"").unwrap_err().starts_with("invalid type:"));
        assert!(q("1e300").is_err());
        assert!(q("100001").is_err());
        let schema = serde_json::to_value(Quantity::schema()).unwrap();
        assert_eq!(schema["minimum"], 1.0);
        assert_eq!(schema["maximum"], f64::from(checkout::MAX_QUANTITY));
        // An order has at most MAX_LINES lines, numbered from 1.
        assert_eq!(usize::try_from(LineNo::MAX).unwrap(), checkout::MAX_LINES);
        let schema = serde_json::to_value(Sku::schema()).unwrap();
        assert_eq!(schema["maxLength"], Sku::MAX);
        list_field!(
            /// Test list.
            pub Pair: Quantity, 1, 2
        );
        let l = |s: &str| serde_json::from_str::<Pair>(s).map_err(|e| e.to_string());
        assert!(l("[]").unwrap_err().starts_with("invalid value:"));
        assert!(l("[1,2,3]").is_err());
        assert_eq!(l("[1,2]").unwrap().into_inner().len(), 2);
    }
}
