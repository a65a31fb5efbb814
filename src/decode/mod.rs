//! decode: bytes → typed [`Event`]s, or a [`DecodeError`] that names the field and why.
//!
//! Nothing from outside can panic here: any byte string gives an event or an error
//! (property-tested below). Errors are data: ingest wraps them with their source
//! position and hands them to the dead-letter sink, and the engine keeps going.
//!
//! Validation follows `contract.md` §1: an event is invalid when it is not a JSON object,
//! its `type` is not one of the six, a required field is missing, or a field the type
//! defines has the wrong type or is out of range. Unknown fields are ignored, and so are
//! fields that belong to another type. `null` counts as absent.

mod json;

use std::borrow::Cow;
use std::fmt;

use chrono::NaiveDate;
use kairos_model::event::{
    Consent, Customer, CustomerRecord, CustomerStatus, Device, EventBody, Network, NetworkKind, Plan, Response,
    ResponseOutcome, Selfcare, Topup, Usage, UsageKind,
};
use kairos_model::{mcc, time, CountryCode, Event, EventKind, Millis, Msisdn, Origin, TimeZone};

use json::{Entries, Field, RawFields, Scalar};

/// The most products a customer record may list (a real customer holds a handful).
pub const MAX_PRODUCTS: usize = 64;
/// The longest product id, in bytes.
pub const MAX_PRODUCT_ID: usize = 128;

/// Why an input message is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// The offending field (`plan.cycle_anchor_day` for nested ones), when one is to blame.
    pub field: Option<String>,
    /// What is wrong, and what would be valid.
    pub reason: String,
}

impl DecodeError {
    fn at(field: impl Into<String>, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
    fn whole(reason: impl Into<String>) -> DecodeError {
        DecodeError {
            field: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The latest event time the engine accepts at one wall-clock instant (contract §5.1): an
/// event stamped more than `max_future` after the wall clock cannot be true yet — a phone or
/// a probe with a wrong clock — and would otherwise move event time there for good (every
/// timer due before it firing at once, every later event late).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizon {
    /// The wall clock when the message was read.
    pub now: Millis,
    /// How far ahead of `now` an event may be stamped.
    pub max_future: Millis,
}

impl Horizon {
    /// The contract's default `max_future`: one hour.
    pub const DEFAULT_MAX_FUTURE: Millis = 3_600_000;

    /// The horizon at the wall clock now.
    pub fn now(max_future: Millis) -> Horizon {
        Horizon {
            now: time::now(),
            max_future,
        }
    }

    /// The latest event time accepted.
    pub fn latest(&self) -> Millis {
        self.now.saturating_add(self.max_future)
    }

    /// Whether `ts` is within the horizon; the error names `ts` and both instants.
    pub fn check(&self, ts: Millis) -> Result<(), DecodeError> {
        if ts <= self.latest() {
            return Ok(());
        }
        Err(DecodeError::at(
            "ts",
            format!(
                "{} is more than {} s after the wall clock ({}): an event cannot be from the future; \
                 check the clock of its source (contract §5.1, max_future)",
                time::format_rfc3339(ts),
                self.max_future / 1000,
                time::format_rfc3339(self.now)
            ),
        ))
    }
}

/// Decodes one message as [`decode`] does, and refuses an event stamped beyond `horizon`.
///
/// ```
/// use kairos::decode::{decode_within, Horizon};
/// use kairos_model::Origin;
/// let at = Origin { source: 0, position: 1 };
/// let line = br#"{"type":"topup","ts":"2999-01-01T00:00:00Z","msisdn":"+351910000003","amount":10}"#;
/// let horizon = Horizon { now: 1_790_000_000_000, max_future: 3_600_000 };
/// let err = decode_within(line, at, &horizon).unwrap_err();
/// assert_eq!(err.field.as_deref(), Some("ts"));
/// ```
pub fn decode_within(bytes: &[u8], origin: Origin, horizon: &Horizon) -> Result<Event, DecodeError> {
    let event = decode(bytes, origin)?;
    horizon.check(event.ts)?;
    Ok(event)
}

/// Decodes one message (a Kafka value or a JSON Lines line) read at `origin`.
///
/// ```
/// use kairos::decode::decode;
/// use kairos_model::{Origin, EventKind};
/// let at = Origin { source: 0, position: 1 };
/// let e = decode(br#"{"type":"topup","ts":"2026-07-01T09:05:00Z","msisdn":"+351910000003","amount":10}"#, at).unwrap();
/// assert_eq!(e.kind(), EventKind::Topup);
/// let err = decode(br#"{"type":"topup","ts":"2026-07-01T09:05:00Z","msisdn":"351910000003","amount":-1}"#, at).unwrap_err();
/// assert_eq!(err.to_string(), "field `amount`: must not be negative (got -1)");
/// ```
pub fn decode(bytes: &[u8], origin: Origin) -> Result<Event, DecodeError> {
    let raw = json::parse(bytes).map_err(DecodeError::whole)?;
    validate(&raw, origin)
}

fn validate(raw: &RawFields<'_>, origin: Origin) -> Result<Event, DecodeError> {
    let fields = Fields { raw };
    let type_name = fields.required_str(Field::Type)?;
    let kind = EventKind::parse(type_name).ok_or_else(|| {
        DecodeError::at(
            "type",
            format!(
                "unknown event type {:?}; valid types are customer, network, usage, selfcare, topup, response",
                truncate(type_name)
            ),
        )
    })?;
    let ts = fields.timestamp(Field::Ts)?;
    let msisdn = fields.msisdn(Field::Msisdn)?.ok_or_else(|| missing(Field::Msisdn))?;
    let body = match kind {
        EventKind::Customer => EventBody::Customer(fields.customer()?),
        EventKind::Network => EventBody::Network(fields.network()?),
        EventKind::Usage => EventBody::Usage(fields.usage()?),
        EventKind::Selfcare => EventBody::Selfcare(Selfcare {
            account_id: fields.optional_string(Field::AccountId)?,
            channel: fields.required_str(Field::Channel)?.to_string(),
            page: fields.required_str(Field::Page)?.to_string(),
        }),
        EventKind::Topup => EventBody::Topup(Topup {
            amount: fields
                .non_negative_number(Field::Amount)?
                .ok_or_else(|| missing(Field::Amount))?,
            currency: fields.optional_string(Field::Currency)?,
            payer: fields.msisdn(Field::Payer)?,
        }),
        EventKind::Response => {
            let outcome = fields.required_str(Field::Outcome)?;
            EventBody::Response(Response {
                action_id: fields.required_str(Field::ActionId)?.to_string(),
                outcome: ResponseOutcome::parse(outcome).ok_or_else(|| {
                    DecodeError::at(
                        "outcome",
                        format!(
                            "unknown outcome {:?}; valid outcomes are delivered, clicked, accepted, declined, opted_out",
                            truncate(outcome)
                        ),
                    )
                })?,
            })
        }
    };
    Ok(Event {
        ts,
        msisdn,
        origin,
        body,
    })
}

fn missing(field: Field) -> DecodeError {
    DecodeError::at(field.name(), "missing required field")
}

fn wrong_type(field: &str, expected: &str, found: &Scalar<'_>) -> DecodeError {
    DecodeError::at(field, format!("expected {expected}, found {}", found.type_name()))
}

/// Keeps echoed input short in error messages.
fn truncate(text: &str) -> Cow<'_, str> {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return Cow::Borrowed(text);
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// Typed access to one object's fields (top level or nested), with the path for errors.
struct Fields<'r, 'a> {
    raw: &'r RawFields<'a>,
}

impl<'a> Fields<'_, 'a> {
    fn required_str(&self, field: Field) -> Result<&str, DecodeError> {
        match self.raw.get(field) {
            None => Err(missing(field)),
            Some(Scalar::Str(s)) => Ok(s),
            Some(other) => Err(wrong_type(field.name(), "a string", other)),
        }
    }

    fn optional_str(&self, field: Field) -> Result<Option<&str>, DecodeError> {
        match self.raw.get(field) {
            None => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(field.name(), "a string", other)),
        }
    }

    fn optional_string(&self, field: Field) -> Result<Option<String>, DecodeError> {
        Ok(self.optional_str(field)?.map(str::to_string))
    }

    fn timestamp(&self, field: Field) -> Result<Millis, DecodeError> {
        let text = self.required_str(field)?;
        time::parse_rfc3339(text)
            .map_err(|why| DecodeError::at(field.name(), format!("{why} (got {:?})", truncate(text))))
    }

    fn msisdn(&self, field: Field) -> Result<Option<Msisdn>, DecodeError> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        Msisdn::parse(text)
            .map(Some)
            .map_err(|why| DecodeError::at(field.name(), format!("{why} (got {:?})", truncate(text))))
    }

    fn date(&self, field: Field) -> Result<Option<NaiveDate>, DecodeError> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        time::parse_date(text)
            .map(Some)
            .map_err(|why| DecodeError::at(field.name(), format!("{why} (got {:?})", truncate(text))))
    }

    fn bool(&self, field: Field) -> Result<Option<bool>, DecodeError> {
        match self.raw.get(field) {
            None => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(field.name(), "true or false", other)),
        }
    }

    fn count(&self, field: Field) -> Result<Option<u64>, DecodeError> {
        scalar_count(field.name(), self.raw.get(field))
    }

    fn non_negative_number(&self, field: Field) -> Result<Option<f64>, DecodeError> {
        scalar_non_negative(field.name(), self.raw.get(field))
    }

    fn country(&self, field: Field) -> Result<Option<CountryCode>, DecodeError> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        CountryCode::parse(text)
            .map(Some)
            .map_err(|why| DecodeError::at(field.name(), format!("{why} (got {:?})", truncate(text))))
    }

    fn object(&self, field: Field) -> Result<Option<&'_ Entries<'a>>, DecodeError> {
        match self.raw.get(field) {
            None => Ok(None),
            Some(Scalar::Object(entries)) => Ok(Some(entries)),
            Some(other) => Err(wrong_type(field.name(), "an object", other)),
        }
    }

    fn customer(&self) -> Result<Customer, DecodeError> {
        if self.bool(Field::Deleted)? == Some(true) {
            return Ok(Customer::Deleted);
        }
        let name = self.required_str(Field::Timezone)?;
        let timezone = TimeZone::parse(name)
            .map_err(|why| DecodeError::at("timezone", format!("{why} (got {:?})", truncate(name))))?;
        let home_country = self
            .country(Field::HomeCountry)?
            .ok_or_else(|| missing(Field::HomeCountry))?;
        let record = CustomerRecord {
            account_id: self.required_str(Field::AccountId)?.to_string(),
            address_id: self.optional_string(Field::AddressId)?,
            home_country,
            timezone,
            language: self.optional_string(Field::Language)?,
            email: self.optional_string(Field::Email)?,
            tenure_start: self.date(Field::TenureStart)?,
            prepaid: self.bool(Field::Prepaid)?,
            plan: self.object(Field::Plan)?.map(plan).transpose()?,
            device: self.object(Field::Device)?.map(device).transpose()?,
            contract_end: self.date(Field::ContractEnd)?,
            consent: self
                .object(Field::Consent)?
                .map(consent)
                .transpose()?
                .unwrap_or_default(),
            status: self.status()?,
            status_reason: self.optional_string(Field::StatusReason)?,
            products: self.products()?,
        };
        Ok(Customer::Upsert(Box::new(record)))
    }

    fn status(&self) -> Result<CustomerStatus, DecodeError> {
        let Some(text) = self.optional_str(Field::Status)? else {
            return Ok(CustomerStatus::Active);
        };
        CustomerStatus::parse(text).ok_or_else(|| {
            DecodeError::at(
                "status",
                format!(
                    "unknown status {:?}; valid statuses are active, suspended, terminated",
                    truncate(text)
                ),
            )
        })
    }

    /// `products`: an array of product ids (non-empty strings of at most
    /// [`MAX_PRODUCT_ID`] bytes, at most [`MAX_PRODUCTS`] of them); repeats count once.
    fn products(&self) -> Result<Vec<String>, DecodeError> {
        let elements = match self.raw.get(Field::Products) {
            None => return Ok(Vec::new()),
            Some(Scalar::Array(elements)) => elements,
            Some(other) => return Err(wrong_type("products", "an array of strings", other)),
        };
        if elements.len() > MAX_PRODUCTS {
            return Err(DecodeError::at(
                "products",
                format!("at most {MAX_PRODUCTS} products (got {})", elements.len()),
            ));
        }
        let mut products: Vec<String> = Vec::with_capacity(elements.len());
        for (i, element) in elements.iter().enumerate() {
            let path = format!("products[{i}]");
            let id = match element {
                Scalar::Str(id) => id,
                other => return Err(wrong_type(&path, "a string", other)),
            };
            if id.is_empty() || id.len() > MAX_PRODUCT_ID {
                return Err(DecodeError::at(
                    path,
                    format!("a product id has 1 to {MAX_PRODUCT_ID} bytes (got {})", id.len()),
                ));
            }
            if !products.iter().any(|p| p == id) {
                products.push(id.to_string());
            }
        }
        Ok(products)
    }

    fn network(&self) -> Result<Network, DecodeError> {
        let event_name = self.required_str(Field::Event)?;
        let event = NetworkKind::parse(event_name).ok_or_else(|| {
            DecodeError::at(
                "event",
                format!(
                    "unknown network event {:?}; valid events are attach, location_update, detach, call, sms",
                    truncate(event_name)
                ),
            )
        })?;
        let explicit_country = self.country(Field::Country)?;
        let mcc = match self.optional_str(Field::Mcc)? {
            None => None,
            Some(text) => Some(mcc::parse_mcc(text).ok_or_else(|| {
                DecodeError::at(
                    "mcc",
                    format!("an MCC is three digits, e.g. \"268\" (got {:?})", truncate(text)),
                )
            })?),
        };
        let country = match (explicit_country, mcc) {
            (Some(country), _) => Some(country),
            (None, Some(code)) => {
                let iso = mcc::mcc_country(code)
                    .ok_or_else(|| DecodeError::at("mcc", format!("unknown Mobile Country Code {code:03}")))?;
                Some(CountryCode::parse(iso).map_err(|why| DecodeError::at("mcc", why))?)
            }
            (None, None) if event == NetworkKind::Detach => None,
            (None, None) => {
                return Err(DecodeError::at(
                    "country",
                    "missing: a network event needs `country` or `mcc` (except detach)",
                ))
            }
        };
        Ok(Network {
            event,
            country,
            mcc,
            mnc: self.optional_string(Field::Mnc)?,
            cell: self.optional_string(Field::Cell)?,
            imei: self.optional_string(Field::Imei)?,
            peer: self.msisdn(Field::Peer)?,
        })
    }

    fn usage(&self) -> Result<Usage, DecodeError> {
        let kind_name = self.required_str(Field::Kind)?;
        let (kind, amount_field) = match kind_name {
            "data" => (UsageKind::Data, Field::Bytes),
            "voice" => (UsageKind::Voice, Field::Seconds),
            "sms" => (UsageKind::Sms, Field::Count),
            other => {
                return Err(DecodeError::at(
                    "kind",
                    format!(
                        "unknown usage kind {:?}; valid kinds are data, voice, sms",
                        truncate(other)
                    ),
                ))
            }
        };
        let amount = self.count(amount_field)?.ok_or_else(|| {
            DecodeError::at(
                amount_field.name(),
                format!(
                    "missing required field (usage of kind {kind_name} carries `{}`)",
                    amount_field.name()
                ),
            )
        })?;
        Ok(Usage {
            kind,
            amount,
            peer: self.msisdn(Field::Peer)?,
        })
    }
}

fn scalar_count(path: &str, value: Option<&Scalar<'_>>) -> Result<Option<u64>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Scalar::Unsigned(n)) => Ok(Some(*n)),
        Some(Scalar::Negative(n)) => Err(DecodeError::at(path, format!("must not be negative (got {n})"))),
        Some(Scalar::Float(f)) if *f < 0.0 => Err(DecodeError::at(path, format!("must not be negative (got {f})"))),
        // Producers that write every number as a float (`2.0`) are common: whole floats count.
        Some(Scalar::Float(f)) if f.fract() == 0.0 && *f < 18_446_744_073_709_551_616.0 => Ok(Some(*f as u64)),
        Some(Scalar::Float(f)) => Err(DecodeError::at(
            path,
            format!("expected a whole number below 2^64 (got {f})"),
        )),
        Some(other) => Err(wrong_type(path, "a non-negative whole number", other)),
    }
}

fn scalar_non_negative(path: &str, value: Option<&Scalar<'_>>) -> Result<Option<f64>, DecodeError> {
    let number = match value {
        None => return Ok(None),
        Some(Scalar::Unsigned(n)) => *n as f64,
        Some(Scalar::Negative(n)) => *n as f64,
        Some(Scalar::Float(f)) => *f,
        Some(other) => return Err(wrong_type(path, "a number", other)),
    };
    if number < 0.0 {
        return Err(DecodeError::at(path, format!("must not be negative (got {number})")));
    }
    Ok(Some(number))
}

fn nested<'s, 'a>(entries: &'s Entries<'a>, name: &str) -> Option<&'s Scalar<'a>> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .filter(|v| **v != Scalar::Null)
}

fn nested_str<'s>(entries: &'s Entries<'_>, object: &str, name: &str) -> Result<Option<&'s str>, DecodeError> {
    match nested(entries, name) {
        None => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(&format!("{object}.{name}"), "a string", other)),
    }
}

fn nested_date(entries: &Entries<'_>, object: &str, name: &str) -> Result<Option<NaiveDate>, DecodeError> {
    let Some(text) = nested_str(entries, object, name)? else {
        return Ok(None);
    };
    time::parse_date(text)
        .map(Some)
        .map_err(|why| DecodeError::at(format!("{object}.{name}"), format!("{why} (got {:?})", truncate(text))))
}

fn nested_bool(entries: &Entries<'_>, object: &str, name: &str) -> Result<bool, DecodeError> {
    match nested(entries, name) {
        None => Ok(false),
        Some(Scalar::Bool(b)) => Ok(*b),
        Some(other) => Err(wrong_type(&format!("{object}.{name}"), "true or false", other)),
    }
}

fn plan(entries: &Entries<'_>) -> Result<Plan, DecodeError> {
    let anchor = scalar_count("plan.cycle_anchor_day", nested(entries, "cycle_anchor_day"))?;
    let cycle_anchor_day = match anchor {
        None => None,
        Some(day @ 1..=31) => Some(day as u8),
        Some(day) => {
            return Err(DecodeError::at(
                "plan.cycle_anchor_day",
                format!("a day of the month is 1 to 31 (got {day})"),
            ))
        }
    };
    Ok(Plan {
        id: nested_str(entries, "plan", "id")?.map(str::to_string),
        data_pack_bytes: scalar_count("plan.data_pack_bytes", nested(entries, "data_pack_bytes"))?,
        cycle_anchor_day,
        monthly_fee: scalar_non_negative("plan.monthly_fee", nested(entries, "monthly_fee"))?,
    })
}

fn device(entries: &Entries<'_>) -> Result<Device, DecodeError> {
    Ok(Device {
        imei: nested_str(entries, "device", "imei")?.map(str::to_string),
        model: nested_str(entries, "device", "model")?.map(str::to_string),
        acquired: nested_date(entries, "device", "acquired")?,
    })
}

fn consent(entries: &Entries<'_>) -> Result<Consent, DecodeError> {
    Ok(Consent {
        sms: nested_bool(entries, "consent", "sms")?,
        email: nested_bool(entries, "consent", "email")?,
        push: nested_bool(entries, "consent", "push")?,
    })
}

#[cfg(test)]
mod tests;
