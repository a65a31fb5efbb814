//! The events of `contract.md` §1, typed. Decoding from JSON lives in the `kairos` crate
//! (`src/decode`); everything here is already valid.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// A subscriber number: E.164 digits (1–15, no leading zero), kept as an integer so that
/// state keyed by subscriber stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Msisdn(u64);

impl Msisdn {
    /// Parses E.164 digits; a leading `+` is accepted and dropped.
    ///
    /// ```
    /// use kairos_model::Msisdn;
    /// assert_eq!(Msisdn::parse("+351910000001").unwrap().to_string(), "351910000001");
    /// assert!(Msisdn::parse("0351").is_err());
    /// assert!(Msisdn::parse("1234567890123456").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Msisdn, &'static str> {
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() || digits.len() > 15 {
            return Err("an E.164 number has 1 to 15 digits");
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("an E.164 number has only digits (and an optional leading +)");
        }
        if digits.starts_with('0') {
            return Err("an E.164 number does not start with 0");
        }
        digits.parse::<u64>().map(Msisdn).map_err(|_| "not a number")
    }

    /// The number as an integer (stable: used for hashing subscribers to workers).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Builds a number from an integer already known to be valid E.164 (generators, tests).
    pub fn from_u64(value: u64) -> Option<Msisdn> {
        (value > 0 && value < 1_000_000_000_000_000).then_some(Msisdn(value))
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An ISO 3166-1 alpha-2 country code known to [`crate::country`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Accepts an assigned ISO 3166-1 alpha-2 code, upper case.
    ///
    /// ```
    /// use kairos_model::CountryCode;
    /// assert_eq!(CountryCode::parse("PT").unwrap().as_str(), "PT");
    /// assert!(CountryCode::parse("pt").is_err());
    /// assert!(CountryCode::parse("QQ").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<CountryCode, &'static str> {
        if !crate::country::is_country_code(text) {
            return Err("not an assigned ISO 3166-1 alpha-2 country code (upper case, e.g. \"PT\")");
        }
        let bytes = text.as_bytes();
        Ok(CountryCode([bytes[0], bytes[1]]))
    }

    /// The two letters.
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The country's English short name, for messages.
    pub fn name(&self) -> &'static str {
        crate::country::country(self.as_str()).map_or("?", |c| c.name)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IANA time zone known to the bundled tz database; written as its name.
///
/// ```
/// use kairos_model::TimeZone;
/// assert_eq!(TimeZone::parse("Europe/Lisbon").unwrap().name(), "Europe/Lisbon");
/// assert!(TimeZone::parse("Europe/Atlantis").is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// Parses an IANA name such as `Europe/Lisbon`.
    pub fn parse(name: &str) -> Result<TimeZone, &'static str> {
        name.parse()
            .map(TimeZone)
            .map_err(|_| "not an IANA time zone such as \"Europe/Lisbon\"")
    }

    /// The zone, for calendar arithmetic.
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }

    /// The IANA name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        TimeZone::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// Where an event was read from: used in dead-letter records and as the last, deterministic
/// tie-breaker when two events of one subscriber carry the same timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// Index of the file (replay, in sorted path order) or of the topic-partition (run).
    pub source: u32,
    /// Line number (1-based) in the file, or offset in the partition.
    pub position: u64,
}

/// One valid input event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time.
    pub ts: Millis,
    /// The subscriber the event is about (the Kafka key).
    pub msisdn: Msisdn,
    /// Where it was read.
    pub origin: Origin,
    /// What happened.
    pub body: EventBody,
}

impl Event {
    /// The event's `type`.
    pub fn kind(&self) -> EventKind {
        match &self.body {
            EventBody::Customer(_) => EventKind::Customer,
            EventBody::Network(_) => EventKind::Network,
            EventBody::Usage(_) => EventKind::Usage,
            EventBody::Selfcare(_) => EventKind::Selfcare,
            EventBody::Topup(_) => EventKind::Topup,
            EventBody::Response(_) => EventKind::Response,
        }
    }

    /// Total order used to apply one subscriber's events: event time, then reference data
    /// before activity at the same instant, then read position.
    pub fn apply_order(&self) -> (Millis, EventKind, Origin) {
        (self.ts, self.kind(), self.origin)
    }
}

/// The six event types. The order of the variants is the order in which events with the
/// same timestamp are applied (a customer record first, so it governs what happens at its
/// own instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    Customer,
    Network,
    Usage,
    Selfcare,
    Topup,
    Response,
}

impl EventKind {
    /// All kinds, in `type` order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Customer,
        EventKind::Network,
        EventKind::Usage,
        EventKind::Selfcare,
        EventKind::Topup,
        EventKind::Response,
    ];

    /// The `type` string of the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Customer => "customer",
            EventKind::Network => "network",
            EventKind::Usage => "usage",
            EventKind::Selfcare => "selfcare",
            EventKind::Topup => "topup",
            EventKind::Response => "response",
        }
    }

    /// The inverse of [`EventKind::as_str`].
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The payload of each event type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    Customer(Customer),
    Network(Network),
    Usage(Usage),
    Selfcare(Selfcare),
    Topup(Topup),
    Response(Response),
}

/// A customer record: an upsert of the whole record, or the erasure of the subscriber.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Customer {
    Upsert(Box<CustomerRecord>),
    /// `"deleted": true`: purge state and contact history.
    Deleted,
}

/// Reference data from CRM/billing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub account_id: String,
    pub address_id: Option<String>,
    pub home_country: CountryCode,
    /// The subscriber's IANA time zone, parsed once by decode.
    pub timezone: TimeZone,
    pub language: Option<String>,
    pub email: Option<String>,
    pub tenure_start: Option<NaiveDate>,
    pub prepaid: Option<bool>,
    pub plan: Option<Plan>,
    pub device: Option<Device>,
    pub contract_end: Option<NaiveDate>,
    pub consent: Consent,
    /// `active` unless the record says otherwise (contract §5.1).
    pub status: CustomerStatus,
    /// Why, in the operator's words (`"port_out"`), when the record says.
    pub status_reason: Option<String>,
    /// The product ids the customer holds, in the record's order, each once.
    pub products: Vec<String>,
}

/// The customer's standing (contract §5.1). From the `ts` of a `terminated` record on, no
/// action is emitted for the subscriber: it is the churn outcome. It is not an erasure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CustomerStatus {
    #[default]
    Active,
    Suspended,
    Terminated,
}

impl CustomerStatus {
    /// The contract's name of a status.
    ///
    /// ```
    /// use kairos_model::event::CustomerStatus;
    /// assert_eq!(CustomerStatus::parse("terminated"), Some(CustomerStatus::Terminated));
    /// assert_eq!(CustomerStatus::Suspended.as_str(), "suspended");
    /// assert_eq!(CustomerStatus::parse("Terminated"), None);
    /// ```
    pub fn parse(text: &str) -> Option<CustomerStatus> {
        match text {
            "active" => Some(CustomerStatus::Active),
            "suspended" => Some(CustomerStatus::Suspended),
            "terminated" => Some(CustomerStatus::Terminated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Active => "active",
            CustomerStatus::Suspended => "suspended",
            CustomerStatus::Terminated => "terminated",
        }
    }
}

/// The subscriber's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: Option<String>,
    pub data_pack_bytes: Option<u64>,
    /// 1–31; the month's last day when the month is shorter.
    pub cycle_anchor_day: Option<u8>,
    pub monthly_fee: Option<f64>,
}

/// The subscriber's handset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub imei: Option<String>,
    pub model: Option<String>,
    pub acquired: Option<NaiveDate>,
}

/// Marketing consent per channel. Missing means no consent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub sms: bool,
    pub email: bool,
    pub push: bool,
}

/// Signalling from the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub event: NetworkKind,
    /// The serving country: `country`, or the country of `mcc`. `None` only for `detach`.
    pub country: Option<CountryCode>,
    pub mcc: Option<u16>,
    pub mnc: Option<String>,
    pub cell: Option<String>,
    pub imei: Option<String>,
    pub peer: Option<Msisdn>,
}

/// The network `event` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkKind {
    Attach,
    LocationUpdate,
    Detach,
    Call,
    Sms,
}

impl NetworkKind {
    /// Parses the contract's `event` string.
    pub fn parse(text: &str) -> Option<NetworkKind> {
        Some(match text {
            "attach" => NetworkKind::Attach,
            "location_update" => NetworkKind::LocationUpdate,
            "detach" => NetworkKind::Detach,
            "call" => NetworkKind::Call,
            "sms" => NetworkKind::Sms,
            _ => return None,
        })
    }
}

/// A rated usage record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub kind: UsageKind,
    /// Bytes (data), seconds (voice) or count (sms).
    pub amount: u64,
    pub peer: Option<Msisdn>,
}

/// The usage `kind` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UsageKind {
    Data,
    Voice,
    Sms,
}

/// A login or page view in the operator's app or portal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selfcare {
    pub account_id: Option<String>,
    pub channel: String,
    pub page: String,
}

/// A prepaid recharge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topup {
    pub amount: f64,
    pub currency: Option<String>,
    pub payer: Option<Msisdn>,
}

/// What became of an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub action_id: String,
    pub outcome: ResponseOutcome,
}

/// The response `outcome` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseOutcome {
    Delivered,
    Clicked,
    Accepted,
    Declined,
    OptedOut,
}

impl ResponseOutcome {
    /// Parses the contract's `outcome` string.
    pub fn parse(text: &str) -> Option<ResponseOutcome> {
        Some(match text {
            "delivered" => ResponseOutcome::Delivered,
            "clicked" => ResponseOutcome::Clicked,
            "accepted" => ResponseOutcome::Accepted,
            "declined" => ResponseOutcome::Declined,
            "opted_out" => ResponseOutcome::OptedOut,
            _ => return None,
        })
    }
}
