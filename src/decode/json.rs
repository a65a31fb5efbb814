//! A one-pass JSON reader that keeps only the fields the contract defines.
//!
//! serde's derive would stop at the first wrongly typed field with a message that names a
//! column but not the field; here every known field is read as a loosely typed [`Scalar`]
//! (borrowing strings from the input when it can), unknown fields are skipped without
//! allocating, and [`super::validate`] turns the scalars into typed events with errors that
//! name the field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The entries of a nested object, in input order.
pub type Entries<'a> = [(Cow<'a, str>, Scalar<'a>)];

/// A JSON value as read, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Negative(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Object(Vec<(Cow<'a, str>, Scalar<'a>)>),
    Array(Vec<Scalar<'a>>),
}

impl Scalar<'_> {
    /// The JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Unsigned(_) | Scalar::Negative(_) | Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Object(_) => "an object",
            Scalar::Array(_) => "an array",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Scalar::Unsigned(v as u64)
        } else {
            Scalar::Negative(v)
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<Scalar<'de>>()? {
            elements.push(element);
        }
        Ok(Scalar::Array(elements))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<Scalar<'de>>()?;
            entries.push((key, value));
        }
        Ok(Scalar::Object(entries))
    }
}

/// A map key that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

macro_rules! fields {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// The top-level fields the contract defines, for any event type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Field { $($variant),+ }

        impl Field {
            const ALL: &'static [Field] = &[$(Field::$variant),+];

            /// The JSON name of the field.
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name),+ }
            }

            fn from_name(name: &str) -> Option<Field> {
                match name { $($name => Some(Field::$variant),)+ _ => None }
            }
        }
    };
}

fields! {
    Type => "type", Ts => "ts", Msisdn => "msisdn",
    AccountId => "account_id", AddressId => "address_id", HomeCountry => "home_country",
    Timezone => "timezone", Language => "language", Email => "email",
    TenureStart => "tenure_start", Prepaid => "prepaid", Plan => "plan", Device => "device",
    ContractEnd => "contract_end", Consent => "consent", Deleted => "deleted",
    Status => "status", StatusReason => "status_reason", Products => "products",
    Event => "event", Country => "country", Mcc => "mcc", Mnc => "mnc", Cell => "cell",
    Imei => "imei", Peer => "peer", Kind => "kind", Bytes => "bytes", Seconds => "seconds",
    Count => "count", Channel => "channel", Page => "page", Amount => "amount",
    Currency => "currency", Payer => "payer", ActionId => "action_id", Outcome => "outcome",
}

const FIELD_COUNT: usize = Field::ALL.len();

/// The known fields of one JSON object; the last occurrence of a repeated key wins.
#[derive(Debug)]
pub struct RawFields<'a> {
    values: [Option<Scalar<'a>>; FIELD_COUNT],
}

impl Default for RawFields<'_> {
    fn default() -> Self {
        RawFields {
            values: std::array::from_fn(|_| None),
        }
    }
}

impl<'a> RawFields<'a> {
    /// The field's value, treating `null` as absent.
    pub fn get(&self, field: Field) -> Option<&Scalar<'a>> {
        match &self.values[field as usize] {
            Some(Scalar::Null) | None => None,
            Some(value) => Some(value),
        }
    }
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut raw = RawFields::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match Field::from_name(&key) {
                        Some(field) => raw.values[field as usize] = Some(map.next_value::<Scalar<'de>>()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Why bytes are not a JSON object at all.
pub fn parse(bytes: &[u8]) -> Result<RawFields<'_>, String> {
    // JSON is UTF-8 (RFC 8259 §8.1). serde_json checks the strings it reads, but not the
    // ones it skips (unknown fields), so the whole message is checked once, up front.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("not valid JSON (not UTF-8: invalid byte at offset {})", e.valid_up_to()))?;
    serde_json::from_str::<RawFields<'_>>(text).map_err(|e| describe(&e))
}

fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        // serde reports "invalid type: …, expected a JSON object" for `[1]`, `"x"`, `3`.
        Category::Data => "not a JSON object".to_string(),
        Category::Eof => format!("truncated JSON ({error})"),
        Category::Syntax | Category::Io => format!("not valid JSON ({error})"),
    }
}
