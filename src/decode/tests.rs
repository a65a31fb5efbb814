//! Tests for decode against `contract.md` §1: the contract's examples, what is ignored,
//! every invalid shape (each naming its field and why), and property tests.

use super::*;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use kairos_model::country::COUNTRIES;
use kairos_model::mcc::MCC_COUNTRIES;
use kairos_model::time::{format_rfc3339, parse_rfc3339};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

const AT: Origin = Origin { source: 0, position: 1 };

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Decodes input that must be valid, and checks the origin is carried through.
#[track_caller]
fn ok(input: impl AsRef<[u8]>) -> Event {
    let bytes = input.as_ref();
    match decode(bytes, AT) {
        Ok(event) => {
            assert_eq!(event.origin, AT);
            event
        }
        Err(err) => panic!(
            "expected a valid event, got `{err}` for {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// Decodes input that must be invalid, blaming `field`, with `fragment` in the reason.
#[track_caller]
fn rejects(input: impl AsRef<[u8]>, field: Option<&str>, fragment: &str) -> DecodeError {
    let bytes = input.as_ref();
    let shown = String::from_utf8_lossy(bytes);
    let err = match decode(bytes, AT) {
        Ok(event) => panic!("expected an error for {shown}, got {event:?}"),
        Err(err) => err,
    };
    assert_eq!(err.field.as_deref(), field, "wrong field for {shown}: {err}");
    assert!(
        err.reason.contains(fragment),
        "reason {:?} lacks {fragment:?} for {shown}",
        err.reason
    );
    err
}

fn object(text: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        other => panic!("test fixture is not an object: {other:?}"),
    }
}

/// `base` with `key` set to `value` (added or replaced).
fn with(base: &str, key: &str, value: Value) -> String {
    let mut map = object(base);
    map.insert(key.to_string(), value);
    Value::Object(map).to_string()
}

/// `base` without `key`.
fn without(base: &str, key: &str) -> String {
    let mut map = object(base);
    assert!(map.remove(key).is_some(), "fixture has no {key}");
    Value::Object(map).to_string()
}

fn ts(text: &str) -> Millis {
    parse_rfc3339(text).unwrap()
}

fn msisdn(text: &str) -> Msisdn {
    Msisdn::parse(text).unwrap()
}

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[track_caller]
fn customer_record(event: &Event) -> &CustomerRecord {
    match &event.body {
        EventBody::Customer(Customer::Upsert(record)) => record,
        other => panic!("expected a customer upsert, got {other:?}"),
    }
}

#[track_caller]
fn network(event: &Event) -> &Network {
    match &event.body {
        EventBody::Network(network) => network,
        other => panic!("expected a network event, got {other:?}"),
    }
}

#[track_caller]
fn usage(event: &Event) -> &Usage {
    match &event.body {
        EventBody::Usage(usage) => usage,
        other => panic!("expected a usage event, got {other:?}"),
    }
}

#[track_caller]
fn topup(event: &Event) -> &Topup {
    match &event.body {
        EventBody::Topup(topup) => topup,
        other => panic!("expected a topup event, got {other:?}"),
    }
}

#[track_caller]
fn selfcare(event: &Event) -> &Selfcare {
    match &event.body {
        EventBody::Selfcare(selfcare) => selfcare,
        other => panic!("expected a selfcare event, got {other:?}"),
    }
}

#[track_caller]
fn response(event: &Event) -> &Response {
    match &event.body {
        EventBody::Response(response) => response,
        other => panic!("expected a response event, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The contract's examples (§1), verbatim
// ---------------------------------------------------------------------------------------

const CUSTOMER: &str = r#"{"type":"customer","ts":"2026-06-01T00:00:00Z","msisdn":"351910000001",
 "account_id":"A-1001","address_id":"ADDR-77","home_country":"PT","timezone":"Europe/Lisbon",
 "language":"pt","email":"ana@example.com","tenure_start":"2019-02-14","prepaid":false,
 "plan":{"id":"PLAN-M","data_pack_bytes":10737418240,"cycle_anchor_day":1,"monthly_fee":25.0},
 "device":{"imei":"356789012345678","model":"Phone X","acquired":"2024-03-10"},
 "contract_end":"2026-08-31",
 "consent":{"sms":true,"email":true,"push":false}}"#;

/// The minimum a customer upsert needs.
const CUSTOMER_MIN: &str = r#"{"type":"customer","ts":"2026-06-01T00:00:00Z","msisdn":"351910000001",
 "account_id":"A-1001","home_country":"PT","timezone":"Europe/Lisbon"}"#;

const NETWORK: &str = r#"{"type":"network","ts":"2026-07-01T14:02:11Z","msisdn":"351910000001","event":"location_update",
 "country":"US","mcc":"310","mnc":"260","cell":"310-260-1234-5678","imei":"356789012345678"}"#;

/// A network event with neither `country` nor `mcc`.
const NETWORK_BARE: &str = r#"{"type":"network","ts":"2026-07-01T14:02:11Z","msisdn":"351910000001","event":"attach"}"#;

const USAGE_DATA: &str =
    r#"{"type":"usage","ts":"2026-07-01T14:10:00Z","msisdn":"351910000001","kind":"data","bytes":52428800}"#;
const USAGE_VOICE: &str = r#"{"type":"usage","ts":"2026-07-01T14:12:00Z","msisdn":"351910000001","kind":"voice","seconds":120,"peer":"351912345678"}"#;
const USAGE_SMS: &str = r#"{"type":"usage","ts":"2026-07-01T14:13:00Z","msisdn":"351910000001","kind":"sms","count":1,"peer":"351912345678"}"#;

const SELFCARE: &str = r#"{"type":"selfcare","ts":"2026-07-01T09:00:00Z","msisdn":"351910000001","account_id":"A-1001",
 "channel":"app","page":"plans"}"#;

const TOPUP: &str = r#"{"type":"topup","ts":"2026-07-01T09:05:00Z","msisdn":"351910000003","amount":10.0,"currency":"EUR","payer":"351910000001"}"#;

const RESPONSE: &str =
    r#"{"type":"response","ts":"2026-07-01T14:05:00Z","msisdn":"351910000001","action_id":"…","outcome":"accepted"}"#;

#[test]
fn customer_contract_example() {
    let event = ok(CUSTOMER);
    assert_eq!(event.kind(), EventKind::Customer);
    assert_eq!(event.ts, ts("2026-06-01T00:00:00Z"));
    assert_eq!(event.msisdn.to_string(), "351910000001");
    let expected = CustomerRecord {
        account_id: "A-1001".into(),
        address_id: Some("ADDR-77".into()),
        home_country: country("PT"),
        timezone: kairos_model::TimeZone::parse("Europe/Lisbon").unwrap(),
        language: Some("pt".into()),
        email: Some("ana@example.com".into()),
        tenure_start: Some(ymd(2019, 2, 14)),
        prepaid: Some(false),
        plan: Some(Plan {
            id: Some("PLAN-M".into()),
            data_pack_bytes: Some(10_737_418_240),
            cycle_anchor_day: Some(1),
            monthly_fee: Some(25.0),
        }),
        device: Some(Device {
            imei: Some("356789012345678".into()),
            model: Some("Phone X".into()),
            acquired: Some(ymd(2024, 3, 10)),
        }),
        contract_end: Some(ymd(2026, 8, 31)),
        consent: Consent {
            sms: true,
            email: true,
            push: false,
        },
        status: Default::default(),
        status_reason: None,
        products: Vec::new(),
    };
    assert_eq!(customer_record(&event), &expected);
}

#[test]
fn customer_minimal_record_has_no_optional_data_and_no_consent() {
    let event = ok(CUSTOMER_MIN);
    let record = customer_record(&event);
    assert_eq!(
        record,
        &CustomerRecord {
            account_id: "A-1001".into(),
            address_id: None,
            home_country: country("PT"),
            timezone: kairos_model::TimeZone::parse("Europe/Lisbon").unwrap(),
            language: None,
            email: None,
            tenure_start: None,
            prepaid: None,
            plan: None,
            device: None,
            contract_end: None,
            consent: Consent::default(),
            status: Default::default(),
            status_reason: None,
            products: Vec::new(),
        }
    );
    assert_eq!(
        record.consent,
        Consent {
            sms: false,
            email: false,
            push: false
        }
    );
}

#[test]
fn customer_consent_missing_channel_means_no_consent() {
    let event = ok(with(CUSTOMER_MIN, "consent", json!({"email": true})));
    assert_eq!(
        customer_record(&event).consent,
        Consent {
            sms: false,
            email: true,
            push: false
        }
    );
    let event = ok(with(CUSTOMER_MIN, "consent", json!({})));
    assert_eq!(customer_record(&event).consent, Consent::default());
    let event = ok(with(CUSTOMER_MIN, "consent", json!({"sms": null, "push": true})));
    assert_eq!(
        customer_record(&event).consent,
        Consent {
            sms: false,
            email: false,
            push: true
        }
    );
}

#[test]
fn customer_msisdn_plus_is_dropped_and_offsets_normalise() {
    let text = with(
        &with(CUSTOMER, "msisdn", json!("+351910000001")),
        "ts",
        json!("2026-06-01T01:00:00+01:00"),
    );
    let event = ok(text);
    assert_eq!(event.msisdn, msisdn("351910000001"));
    assert_eq!(event.msisdn.to_string(), "351910000001");
    assert_eq!(event.msisdn.as_u64(), 351_910_000_001);
    assert_eq!(event.ts, ts("2026-06-01T00:00:00Z"));
    assert_eq!(format_rfc3339(event.ts), "2026-06-01T00:00:00Z");
}

#[test]
fn customer_partial_plan_and_device() {
    let text = with(
        &with(CUSTOMER_MIN, "plan", json!({"cycle_anchor_day": 31})),
        "device",
        json!({"acquired": "2024-02-29"}),
    );
    let event = ok(text);
    let record = customer_record(&event);
    assert_eq!(
        record.plan,
        Some(Plan {
            id: None,
            data_pack_bytes: None,
            cycle_anchor_day: Some(31),
            monthly_fee: None
        })
    );
    assert_eq!(
        record.device,
        Some(Device {
            imei: None,
            model: None,
            acquired: Some(ymd(2024, 2, 29))
        })
    );
    // An integer fee is a fee; an empty plan is a plan.
    let event = ok(with(
        CUSTOMER_MIN,
        "plan",
        json!({"monthly_fee": 25, "data_pack_bytes": 0}),
    ));
    let plan = customer_record(&event).plan.clone().unwrap();
    assert_eq!(plan.monthly_fee, Some(25.0));
    assert_eq!(plan.data_pack_bytes, Some(0));
    let event = ok(with(CUSTOMER_MIN, "plan", json!({})));
    assert_eq!(
        customer_record(&event).plan,
        Some(Plan {
            id: None,
            data_pack_bytes: None,
            cycle_anchor_day: None,
            monthly_fee: None
        })
    );
}

#[test]
fn customer_deleted_alone_is_an_erasure() {
    let event = ok(r#"{"type":"customer","ts":"2026-07-01T00:00:00Z","msisdn":"+351910000001","deleted":true}"#);
    assert_eq!(event.body, EventBody::Customer(Customer::Deleted));
    assert_eq!(event.msisdn, msisdn("351910000001"));
    // A full record marked deleted is still an erasure.
    assert_eq!(
        ok(with(CUSTOMER, "deleted", json!(true))).body,
        EventBody::Customer(Customer::Deleted)
    );
}

#[test]
fn customer_deleted_false_or_null_is_an_upsert() {
    let event = ok(with(CUSTOMER_MIN, "deleted", json!(false)));
    assert_eq!(customer_record(&event).account_id, "A-1001");
    let event = ok(with(CUSTOMER_MIN, "deleted", Value::Null));
    assert_eq!(customer_record(&event).account_id, "A-1001");
    // ... and then it needs the upsert's required fields.
    let deleted_false = r#"{"type":"customer","ts":"2026-07-01T00:00:00Z","msisdn":"351910000001","deleted":false}"#;
    assert!(decode(deleted_false.as_bytes(), AT).is_err());
    let deleted_null = r#"{"type":"customer","ts":"2026-07-01T00:00:00Z","msisdn":"351910000001","deleted":null}"#;
    assert!(decode(deleted_null.as_bytes(), AT).is_err());
}

#[test]
fn network_contract_example() {
    let event = ok(NETWORK);
    assert_eq!(event.kind(), EventKind::Network);
    assert_eq!(event.ts, ts("2026-07-01T14:02:11Z"));
    assert_eq!(event.msisdn, msisdn("351910000001"));
    assert_eq!(
        network(&event),
        &Network {
            event: NetworkKind::LocationUpdate,
            country: Some(country("US")),
            mcc: Some(310),
            mnc: Some("260".into()),
            cell: Some("310-260-1234-5678".into()),
            imei: Some("356789012345678".into()),
            peer: None,
        }
    );
}

#[test]
fn network_only_mcc_gives_the_country() {
    let event = ok(with(NETWORK_BARE, "mcc", json!("310")));
    assert_eq!(network(&event).country, Some(country("US")));
    assert_eq!(network(&event).mcc, Some(310));
    let event = ok(with(NETWORK_BARE, "mcc", json!("268")));
    assert_eq!(network(&event).country, Some(country("PT")));
    // A null country is absent, so the MCC decides.
    let event = ok(with(&with(NETWORK_BARE, "mcc", json!("234")), "country", Value::Null));
    assert_eq!(network(&event).country, Some(country("GB")));
}

#[test]
fn network_explicit_country_wins_over_mcc() {
    let text = with(&with(NETWORK_BARE, "country", json!("PT")), "mcc", json!("310"));
    let event = ok(text);
    assert_eq!(network(&event).country, Some(country("PT")));
    assert_eq!(network(&event).mcc, Some(310));
}

#[test]
fn network_detach_needs_no_country() {
    let event = ok(with(NETWORK_BARE, "event", json!("detach")));
    assert_eq!(
        network(&event),
        &Network {
            event: NetworkKind::Detach,
            country: None,
            mcc: None,
            mnc: None,
            cell: None,
            imei: None,
            peer: None,
        }
    );
    // ... but may have one.
    let event = ok(with(
        &with(NETWORK_BARE, "event", json!("detach")),
        "country",
        json!("ES"),
    ));
    assert_eq!(network(&event).country, Some(country("ES")));
}

#[test]
fn network_every_event_kind_and_peer() {
    for (name, kind) in [
        ("attach", NetworkKind::Attach),
        ("location_update", NetworkKind::LocationUpdate),
        ("detach", NetworkKind::Detach),
        ("call", NetworkKind::Call),
        ("sms", NetworkKind::Sms),
    ] {
        let event = ok(with(&with(NETWORK_BARE, "event", json!(name)), "country", json!("FR")));
        assert_eq!(network(&event).event, kind, "{name}");
    }
    let call = with(
        &with(&with(NETWORK_BARE, "event", json!("call")), "country", json!("FR")),
        "peer",
        json!("+33612345678"),
    );
    assert_eq!(network(&ok(call)).peer, Some(msisdn("33612345678")));
}

#[test]
fn usage_contract_examples() {
    let data = ok(USAGE_DATA);
    assert_eq!(data.kind(), EventKind::Usage);
    assert_eq!(data.ts, ts("2026-07-01T14:10:00Z"));
    assert_eq!(
        usage(&data),
        &Usage {
            kind: UsageKind::Data,
            amount: 52_428_800,
            peer: None
        }
    );
    let voice = ok(USAGE_VOICE);
    assert_eq!(voice.ts, ts("2026-07-01T14:12:00Z"));
    assert_eq!(
        usage(&voice),
        &Usage {
            kind: UsageKind::Voice,
            amount: 120,
            peer: Some(msisdn("351912345678"))
        }
    );
    let sms = ok(USAGE_SMS);
    assert_eq!(sms.ts, ts("2026-07-01T14:13:00Z"));
    assert_eq!(
        usage(&sms),
        &Usage {
            kind: UsageKind::Sms,
            amount: 1,
            peer: Some(msisdn("351912345678"))
        }
    );
}

#[test]
fn usage_amount_limits() {
    assert_eq!(usage(&ok(with(USAGE_DATA, "bytes", json!(0)))).amount, 0);
    assert_eq!(usage(&ok(with(USAGE_DATA, "bytes", json!(u64::MAX)))).amount, u64::MAX);
}

#[test]
fn selfcare_contract_example() {
    let event = ok(SELFCARE);
    assert_eq!(event.kind(), EventKind::Selfcare);
    assert_eq!(event.ts, ts("2026-07-01T09:00:00Z"));
    assert_eq!(
        selfcare(&event),
        &Selfcare {
            account_id: Some("A-1001".into()),
            channel: "app".into(),
            page: "plans".into()
        }
    );
    let event = ok(without(SELFCARE, "account_id"));
    assert_eq!(selfcare(&event).account_id, None);
}

#[test]
fn topup_contract_example() {
    let event = ok(TOPUP);
    assert_eq!(event.kind(), EventKind::Topup);
    assert_eq!(event.ts, ts("2026-07-01T09:05:00Z"));
    assert_eq!(event.msisdn, msisdn("351910000003"));
    assert_eq!(
        topup(&event),
        &Topup {
            amount: 10.0,
            currency: Some("EUR".into()),
            payer: Some(msisdn("351910000001"))
        }
    );
    assert_eq!(topup(&ok(with(TOPUP, "amount", json!(10)))).amount, 10.0);
    assert_eq!(topup(&ok(with(TOPUP, "amount", json!(0)))).amount, 0.0);
    assert_eq!(topup(&ok(with(TOPUP, "amount", json!(12.34)))).amount, 12.34);
    let bare = ok(without(&without(TOPUP, "currency"), "payer"));
    assert_eq!(
        topup(&bare),
        &Topup {
            amount: 10.0,
            currency: None,
            payer: None
        }
    );
}

#[test]
fn response_contract_example_and_every_outcome() {
    let event = ok(RESPONSE);
    assert_eq!(event.kind(), EventKind::Response);
    assert_eq!(event.ts, ts("2026-07-01T14:05:00Z"));
    assert_eq!(
        response(&event),
        &Response {
            action_id: "…".into(),
            outcome: ResponseOutcome::Accepted
        }
    );
    for (name, outcome) in [
        ("delivered", ResponseOutcome::Delivered),
        ("clicked", ResponseOutcome::Clicked),
        ("accepted", ResponseOutcome::Accepted),
        ("declined", ResponseOutcome::Declined),
        ("opted_out", ResponseOutcome::OptedOut),
    ] {
        assert_eq!(response(&ok(with(RESPONSE, "outcome", json!(name)))).outcome, outcome);
    }
}

#[test]
fn timestamps_in_every_rfc3339_form() {
    let at = |text: &str| ok(with(TOPUP, "ts", json!(text))).ts;
    assert_eq!(at("1970-01-01T00:00:00Z"), 0);
    assert_eq!(at("1970-01-01T01:00:00+01:00"), 0);
    assert_eq!(at("1969-12-31T23:00:00-01:00"), 0);
    assert_eq!(at("1970-01-01T00:00:01.5Z"), 1500);
    assert_eq!(at("2026-07-01T15:02:11.250+01:00"), at("2026-07-01T14:02:11.250Z"));
    assert_eq!(
        format_rfc3339(at("2026-07-01T15:02:11.250+01:00")),
        "2026-07-01T14:02:11.250Z"
    );
    assert_eq!(at("2026-07-01T14:02:11+00:00"), at("2026-07-01T14:02:11Z"));
    assert_eq!(at("2026-07-01T14:02:11-00:00"), at("2026-07-01T14:02:11Z"));
    // Sub-millisecond digits are truncated, not rounded.
    assert_eq!(at("1970-01-01T00:00:00.999999999Z"), 999);
    assert_eq!(at("9999-12-31T23:59:59.999Z"), 253_402_300_799_999);
}

#[test]
fn msisdn_lengths() {
    assert_eq!(ok(with(TOPUP, "msisdn", json!("1"))).msisdn.to_string(), "1");
    assert_eq!(
        ok(with(TOPUP, "msisdn", json!("999999999999999"))).msisdn.to_string(),
        "999999999999999"
    );
    assert_eq!(
        ok(with(TOPUP, "msisdn", json!("+999999999999999"))).msisdn.to_string(),
        "999999999999999"
    );
}

#[test]
fn origin_is_carried_through() {
    let at = Origin {
        source: 7,
        position: u64::MAX,
    };
    assert_eq!(decode(TOPUP.as_bytes(), at).unwrap().origin, at);
}

// ---------------------------------------------------------------------------------------
// What is ignored: unknown fields, other types' fields, null, duplicates
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_fields_are_ignored() {
    let plain = ok(USAGE_DATA);
    for (key, value) in [
        ("x", json!(1)),
        ("note", json!("free text")),
        ("extra", json!({"nested": {"deeper": [1, 2, {"type": "bogus"}]}})),
        ("list", json!([1, "two", null, [true], {"ts": "yesterday"}])),
        ("empty", json!({})),
        ("nothing", Value::Null),
        ("Type", json!("nonsense")),
        ("TS", json!(5)),
        ("MSISDN", json!([])),
        ("", json!("empty key")),
        ("ünïcödé 🎉", json!("✓")),
    ] {
        assert_eq!(ok(with(USAGE_DATA, key, value.clone())), plain, "{key}: {value}");
    }
    // Nested objects ignore their unknown fields too.
    let event = ok(with(
        CUSTOMER_MIN,
        "plan",
        json!({"cycle_anchor_day": 5, "extra": [1, {"a": "b"}], "id": "P", "unknown": {"x": null}}),
    ));
    assert_eq!(customer_record(&event).plan.as_ref().unwrap().cycle_anchor_day, Some(5));
    let event = ok(with(
        CUSTOMER_MIN,
        "consent",
        json!({"sms": true, "fax": "yes", "carrier_pigeon": [1]}),
    ));
    assert_eq!(
        customer_record(&event).consent,
        Consent {
            sms: true,
            email: false,
            push: false
        }
    );
}

#[test]
fn deeply_nested_unknown_field_is_ignored() {
    let deep = format!(
        r#"{{"type":"topup","ts":"2026-07-01T09:05:00Z","msisdn":"1","amount":1,"junk":{}{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    assert_eq!(topup(&ok(deep)).amount, 1.0);
}

#[test]
fn deeply_nested_known_field_is_an_error_not_a_crash() {
    let deep = format!(
        r#"{{"type":"customer","ts":"2026-07-01T09:05:00Z","msisdn":"1","plan":{}1{}}}"#,
        r#"{"a":"#.repeat(5_000),
        "}".repeat(5_000)
    );
    rejects(deep, None, "not valid JSON");
    let top = "[".repeat(100_000);
    rejects(top, None, "not a JSON object");
}

#[test]
fn fields_of_other_types_are_ignored_even_with_odd_types() {
    let odd = [
        ("bytes", json!("lots")),
        ("seconds", json!(-1)),
        ("count", json!(1.5)),
        ("amount", json!("ten")),
        ("kind", json!(5)),
        ("page", json!({})),
        ("channel", json!([])),
        ("outcome", json!("maybe")),
        ("action_id", json!(false)),
        ("payer", json!("not a number")),
        ("currency", json!(978)),
        ("plan", json!("none")),
        ("consent", json!("yes")),
        ("home_country", json!("pt")),
        ("timezone", json!("Mars/Olympus")),
        ("deleted", json!("maybe")),
    ];
    let base = ok(NETWORK);
    for (key, value) in &odd {
        assert_eq!(ok(with(NETWORK, key, value.clone())), base, "network + {key}: {value}");
    }
    // Usage only reads the amount of its own kind.
    let data = ok(USAGE_DATA);
    for (key, value) in [
        ("seconds", json!("120")),
        ("count", json!(-1)),
        ("event", json!("roam")),
        ("mcc", json!("31")),
        ("country", json!("USA")),
        ("account_id", json!(1)),
    ] {
        assert_eq!(ok(with(USAGE_DATA, key, value.clone())), data, "usage + {key}: {value}");
    }
    // Other types: fields that only another type defines.
    let topup_event = ok(TOPUP);
    for (key, value) in [("peer", json!("abc")), ("event", json!(1)), ("bytes", json!(-1))] {
        assert_eq!(
            ok(with(TOPUP, key, value.clone())),
            topup_event,
            "topup + {key}: {value}"
        );
    }
    let customer_event = ok(CUSTOMER);
    for (key, value) in [
        ("peer", json!("abc")),
        ("event", json!(1)),
        ("amount", json!(-5)),
        ("imei", json!(5)),
        ("country", json!("USA")),
    ] {
        assert_eq!(
            ok(with(CUSTOMER, key, value.clone())),
            customer_event,
            "customer + {key}: {value}"
        );
    }
    let selfcare_event = ok(SELFCARE);
    for (key, value) in [("payer", json!("x")), ("outcome", json!(7)), ("email", json!(5))] {
        assert_eq!(
            ok(with(SELFCARE, key, value.clone())),
            selfcare_event,
            "selfcare + {key}: {value}"
        );
    }
    let response_event = ok(RESPONSE);
    for (key, value) in [("amount", json!("x")), ("kind", json!({})), ("account_id", json!(1))] {
        assert_eq!(
            ok(with(RESPONSE, key, value.clone())),
            response_event,
            "response + {key}: {value}"
        );
    }
}

#[test]
fn null_optional_fields_are_absent() {
    let event = ok(with(
        &with(
            &with(&with(CUSTOMER_MIN, "email", Value::Null), "plan", Value::Null),
            "device",
            Value::Null,
        ),
        "consent",
        Value::Null,
    ));
    let record = customer_record(&event);
    assert_eq!(
        (record.email.as_ref(), record.plan.as_ref(), record.device.as_ref()),
        (None, None, None)
    );
    assert_eq!(record.consent, Consent::default());
    for key in ["address_id", "language", "tenure_start", "prepaid", "contract_end"] {
        assert_eq!(ok(with(CUSTOMER_MIN, key, Value::Null)), ok(CUSTOMER_MIN), "{key}");
    }
    let event = ok(with(
        CUSTOMER_MIN,
        "plan",
        json!({"id": null, "data_pack_bytes": null, "cycle_anchor_day": null, "monthly_fee": null}),
    ));
    assert_eq!(
        customer_record(&event).plan,
        Some(Plan {
            id: None,
            data_pack_bytes: None,
            cycle_anchor_day: None,
            monthly_fee: None
        })
    );
    let event = ok(with(
        CUSTOMER_MIN,
        "device",
        json!({"imei": null, "model": null, "acquired": null}),
    ));
    assert_eq!(
        customer_record(&event).device,
        Some(Device {
            imei: None,
            model: None,
            acquired: None
        })
    );
    for key in ["mnc", "cell", "imei", "peer", "mcc"] {
        let event = ok(with(NETWORK, key, Value::Null));
        assert_eq!(network(&event).country, Some(country("US")), "{key}");
    }
    assert_eq!(network(&ok(with(NETWORK, "peer", Value::Null))).peer, None);
    assert_eq!(usage(&ok(with(USAGE_VOICE, "peer", Value::Null))).peer, None);
    assert_eq!(topup(&ok(with(TOPUP, "payer", Value::Null))).payer, None);
    assert_eq!(topup(&ok(with(TOPUP, "currency", Value::Null))).currency, None);
    assert_eq!(
        selfcare(&ok(with(SELFCARE, "account_id", Value::Null))).account_id,
        None
    );
}

#[test]
fn null_required_fields_are_missing() {
    for (base, key) in [
        (TOPUP, "type"),
        (TOPUP, "ts"),
        (TOPUP, "msisdn"),
        (TOPUP, "amount"),
        (CUSTOMER_MIN, "account_id"),
        (CUSTOMER_MIN, "home_country"),
        (CUSTOMER_MIN, "timezone"),
        (NETWORK_BARE, "event"),
        (USAGE_DATA, "kind"),
        (USAGE_DATA, "bytes"),
        (USAGE_VOICE, "seconds"),
        (USAGE_SMS, "count"),
        (SELFCARE, "channel"),
        (SELFCARE, "page"),
        (RESPONSE, "action_id"),
        (RESPONSE, "outcome"),
    ] {
        rejects(with(base, key, Value::Null), Some(key), "missing required field");
    }
    rejects(
        with(&with(NETWORK, "country", Value::Null), "mcc", Value::Null),
        Some("country"),
        "missing",
    );
}

#[test]
fn duplicate_keys_last_one_wins() {
    let event = ok(r#"{"type":"topup","ts":"2026-07-01T09:05:00Z","msisdn":"1","msisdn":"+22","amount":1}"#);
    assert_eq!(event.msisdn.to_string(), "22");
    let event = ok(r#"{"type":"bogus","ts":"2026-07-01T09:05:00Z","msisdn":"1","amount":1,"type":"topup"}"#);
    assert_eq!(event.kind(), EventKind::Topup);
    let event = ok(r#"{"type":"topup","ts":"yesterday","msisdn":"1","amount":1,"ts":"2026-07-01T09:05:00Z"}"#);
    assert_eq!(event.ts, ts("2026-07-01T09:05:00Z"));
    // An invalid value is overwritten by a later valid one ...
    let event = ok(r#"{"type":"usage","ts":"2026-07-01T14:10:00Z","msisdn":"1","kind":"data","bytes":"x","bytes":7}"#);
    assert_eq!(usage(&event).amount, 7);
    // ... and a valid value by a later invalid or null one.
    rejects(
        r#"{"type":"usage","ts":"2026-07-01T14:10:00Z","msisdn":"1","kind":"data","bytes":7,"bytes":-7}"#,
        Some("bytes"),
        "must not be negative",
    );
    rejects(
        r#"{"type":"usage","ts":"2026-07-01T14:10:00Z","msisdn":"1","kind":"data","bytes":7,"bytes":null}"#,
        Some("bytes"),
        "missing required field",
    );
    // Nested objects: last key wins inside, and a repeated object replaces the earlier whole.
    let customer = |rest: &str| {
        format!(
            r#"{{"type":"customer","ts":"2026-06-01T00:00:00Z","msisdn":"1","account_id":"A","home_country":"PT","timezone":"Europe/Lisbon",{rest}}}"#
        )
    };
    let event = ok(customer(r#""plan":{"cycle_anchor_day":0,"cycle_anchor_day":5}"#));
    assert_eq!(customer_record(&event).plan.as_ref().unwrap().cycle_anchor_day, Some(5));
    let event = ok(customer(
        r#""consent":{"sms":true,"sms":false,"email":"x","email":true}"#,
    ));
    assert_eq!(
        customer_record(&event).consent,
        Consent {
            sms: false,
            email: true,
            push: false
        }
    );
    let event = ok(customer(r#""consent":{"sms":true,"sms":null}"#));
    assert!(!customer_record(&event).consent.sms);
    let event = ok(customer(
        r#""plan":{"id":"A","cycle_anchor_day":3},"plan":{"data_pack_bytes":9}"#,
    ));
    assert_eq!(
        customer_record(&event).plan,
        Some(Plan {
            id: None,
            data_pack_bytes: Some(9),
            cycle_anchor_day: None,
            monthly_fee: None
        })
    );
}

#[test]
fn escaped_keys_and_values_are_read_like_plain_ones() {
    let event = ok(r#"{"\u0074ype":"top\u0075p","ts":"2026-07-01T09:05:00Z","ms\u0069sdn":"\u002b351","amount":1}"#);
    assert_eq!(event.kind(), EventKind::Topup);
    assert_eq!(event.msisdn.to_string(), "351");
    let event = ok(
        r#"{"type":"selfcare","ts":"2026-07-01T09:00:00Z","msisdn":"1","channel":"a\"b\\c\n","page":"\ud83c\udf89"}"#,
    );
    assert_eq!(selfcare(&event).channel, "a\"b\\c\n");
    assert_eq!(selfcare(&event).page, "🎉");
}

#[test]
fn whitespace_around_and_inside_is_fine() {
    let event =
        ok(" \t\r\n{ \"type\" : \"topup\" ,\n \"ts\":\"2026-07-01T09:05:00Z\", \"msisdn\" :\"1\", \"amount\": 1 }\r\n");
    assert_eq!(topup(&event).amount, 1.0);
}

// ---------------------------------------------------------------------------------------
// Invalid shapes
// ---------------------------------------------------------------------------------------

#[test]
fn not_json() {
    for text in [
        "hello",
        "{type:customer}",
        "{'type':'topup'}",
        r#"{"type":"topup",}"#,
        r#"{"type" "topup"}"#,
        r#"{"type":topup}"#,
        "{,}",
        "}",
    ] {
        rejects(text, None, "not valid JSON");
    }
    // Trailing content after the object is not one JSON value.
    rejects(format!("{TOPUP} x"), None, "not valid JSON");
    rejects(format!("{TOPUP}{TOPUP}"), None, "not valid JSON");
    rejects(format!("{TOPUP}\n{TOPUP}"), None, "not valid JSON");
    // A byte-order mark is not JSON either.
    rejects(
        [b"\xEF\xBB\xBF".as_slice(), TOPUP.as_bytes()].concat(),
        None,
        "not valid JSON",
    );
}

#[test]
fn truncated_json() {
    for text in [
        "",
        "   ",
        "\n",
        "nul",
        "{",
        r#"{"type":"usage""#,
        r#"{"type":"us"#,
        r#"{"type":"#,
        r#"{"type":"topup","ts":"2026-07-01T09:05:00Z","msisdn":"1","amount":1"#,
        r#"{"type":"customer","plan":{"id":"x""#,
    ] {
        rejects(text, None, "truncated JSON");
    }
    let cut = &TOPUP.as_bytes()[..TOPUP.len() - 1];
    rejects(cut, None, "truncated JSON");
}

#[test]
fn top_level_values_that_are_not_objects() {
    let wrapped = format!("[{TOPUP}]");
    for text in [
        "[]",
        "[1]",
        wrapped.as_str(),
        r#""x""#,
        r#""{\"type\":\"topup\"}""#,
        "3",
        "-1.5",
        "true",
        "false",
        "null",
    ] {
        let err = rejects(text, None, "not a JSON object");
        assert_eq!(err.to_string(), err.reason);
    }
}

#[test]
fn non_utf8_input() {
    rejects(b"\xff\xfe", None, "not valid JSON");
    rejects(b"\xff\xfe{\x00\"\x00", None, "not valid JSON");
    // Invalid UTF-8 in a field the contract defines, in a key, and in a nested known object.
    let in_value = b"{\"type\":\"selfcare\",\"ts\":\"2026-07-01T09:00:00Z\",\"msisdn\":\"1\",\"channel\":\"app\",\"page\":\"pl\xffans\"}";
    rejects(in_value, None, "not valid JSON");
    let in_type = b"{\"type\":\"top\xc3up\",\"ts\":\"2026-07-01T09:00:00Z\",\"msisdn\":\"1\",\"amount\":1}";
    rejects(in_type, None, "not valid JSON");
    let in_key = b"{\"type\":\"topup\",\"ts\":\"2026-07-01T09:00:00Z\",\"msisdn\":\"1\",\"amount\":1,\"\xfe\":1}";
    rejects(in_key, None, "not valid JSON");
    let in_nested = b"{\"type\":\"customer\",\"ts\":\"2026-07-01T09:00:00Z\",\"msisdn\":\"1\",\"account_id\":\"A\",\"home_country\":\"PT\",\"timezone\":\"Europe/Lisbon\",\"device\":{\"model\":\"\xed\xa0\x80\"}}";
    rejects(in_nested, None, "not valid JSON");
    // A lone surrogate escape in a known field.
    rejects(
        r#"{"type":"selfcare","ts":"2026-07-01T09:00:00Z","msisdn":"1","channel":"app","page":"\ud800"}"#,
        None,
        "not valid JSON",
    );
}

#[test]
fn non_utf8_in_an_unknown_field_is_not_json() {
    let bytes =
        b"{\"type\":\"topup\",\"ts\":\"2026-07-01T09:05:00Z\",\"msisdn\":\"1\",\"amount\":1,\"note\":\"\xff\xfe\"}";
    rejects(bytes, None, "not valid JSON");
    let nested = b"{\"type\":\"topup\",\"ts\":\"2026-07-01T09:05:00Z\",\"msisdn\":\"1\",\"amount\":1,\"note\":[{\"a\":\"\xc3\"}]}";
    rejects(nested, None, "not valid JSON");
}

#[test]
fn missing_common_fields() {
    rejects(without(TOPUP, "type"), Some("type"), "missing required field");
    rejects(without(TOPUP, "ts"), Some("ts"), "missing required field");
    rejects(without(TOPUP, "msisdn"), Some("msisdn"), "missing required field");
    rejects("{}", Some("type"), "missing required field");
    let err = rejects(r#"{"type":"topup"}"#, Some("ts"), "missing required field");
    assert_eq!(err.to_string(), "field `ts`: missing required field");
}

#[test]
fn type_unknown_or_not_a_string() {
    for name in ["Customer", "TOPUP", "cdr", "", " topup", "topup ", "deleted"] {
        let err = rejects(with(TOPUP, "type", json!(name)), Some("type"), "unknown event type");
        assert!(
            err.reason
                .contains("customer, network, usage, selfcare, topup, response"),
            "{err}"
        );
        assert!(err.reason.contains(&format!("{name:?}")), "{err}");
    }
    for value in [json!(5), json!(true), json!({"name": "topup"}), json!(["topup"])] {
        rejects(with(TOPUP, "type", value), Some("type"), "expected a string");
    }
    rejects(with(TOPUP, "type", json!(1)), Some("type"), "found a number");
    rejects(with(TOPUP, "type", json!([])), Some("type"), "found an array");
    rejects(with(TOPUP, "type", json!({})), Some("type"), "found an object");
    rejects(with(TOPUP, "type", json!(false)), Some("type"), "found a boolean");
}

#[test]
fn bad_timestamps() {
    for text in [
        "yesterday",
        "2026-07-01",
        "2026-07-01T14:02:11",
        "2026-07-01T14:02Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-07-01T25:00:00Z",
        "2026-07-01T14:02:11+25:00",
        "2026-07-01T14:02:11 +01:00",
        "26-07-01T14:02:11Z",
        "1751378531",
        "",
    ] {
        let err = rejects(with(TOPUP, "ts", json!(text)), Some("ts"), "not an RFC 3339 timestamp");
        assert!(err.reason.contains(&format!("(got {text:?})")), "{err}");
    }
    for text in [
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:30:00+01:00",
        "0001-01-01T00:00:00Z",
    ] {
        rejects(with(TOPUP, "ts", json!(text)), Some("ts"), "before 1970");
    }
    rejects(
        with(TOPUP, "ts", json!(1_751_378_531)),
        Some("ts"),
        "expected a string, found a number",
    );
    rejects(with(TOPUP, "ts", json!({"$date": 1})), Some("ts"), "expected a string");
}

#[test]
fn timestamps_after_year_9999_are_rejected() {
    for text in ["9999-12-31T23:59:59-23:59", "9999-12-31T23:00:00-01:00"] {
        rejects(with(TOPUP, "ts", json!(text)), Some("ts"), "");
    }
}

#[test]
fn an_event_more_than_max_future_after_the_wall_clock_is_rejected() {
    let now = parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
    let horizon = Horizon {
        now,
        max_future: Horizon::DEFAULT_MAX_FUTURE,
    };
    let at = Origin { source: 0, position: 1 };
    let line = |ts: &str| with(TOPUP, "ts", json!(ts)).to_string();
    // Up to one hour ahead is a clock that drifts; a millisecond more cannot be true yet.
    assert!(decode_within(line("2026-12-01T13:00:00Z").as_bytes(), at, &horizon).is_ok());
    assert!(decode_within(line("2020-01-01T00:00:00Z").as_bytes(), at, &horizon).is_ok());
    let error = decode_within(line("2026-12-01T13:00:00.001Z").as_bytes(), at, &horizon).unwrap_err();
    assert_eq!(error.field.as_deref(), Some("ts"));
    assert!(
        error.reason.contains("after the wall clock (2026-12-01T12:00:00Z)"),
        "{error}"
    );
    // The horizon does not overflow at the far end of time.
    let end = Horizon {
        now: Millis::MAX,
        max_future: Millis::MAX,
    };
    assert_eq!(end.latest(), Millis::MAX);
}

#[test]
fn bad_msisdns() {
    for (text, fragment) in [
        ("35191000000a", "only digits"),
        ("+351 910 000 001", "only digits"),
        (" 351910000001", "only digits"),
        ("351-910", "only digits"),
        ("++351", "only digits"),
        ("-351", "only digits"),
        ("３５１", "only digits"),
        ("0351910000001", "does not start with 0"),
        ("+0351910000001", "does not start with 0"),
        ("0", "does not start with 0"),
        ("1234567890123456", "1 to 15 digits"),
        ("+1234567890123456", "1 to 15 digits"),
        ("", "1 to 15 digits"),
        ("+", "1 to 15 digits"),
    ] {
        let err = rejects(with(TOPUP, "msisdn", json!(text)), Some("msisdn"), fragment);
        assert!(err.reason.contains(&format!("(got {text:?})")), "{err}");
    }
    rejects(
        with(TOPUP, "msisdn", json!(351_910_000_001u64)),
        Some("msisdn"),
        "expected a string, found a number",
    );
    rejects(
        with(TOPUP, "msisdn", json!(["351"])),
        Some("msisdn"),
        "expected a string",
    );
}

#[test]
fn customer_missing_required_fields() {
    for key in ["account_id", "home_country", "timezone"] {
        rejects(without(CUSTOMER, key), Some(key), "missing required field");
    }
    let empty = r#"{"type":"customer","ts":"2026-06-01T00:00:00Z","msisdn":"1"}"#;
    assert!(decode(empty.as_bytes(), AT).is_err());
}

#[test]
fn customer_bad_fields() {
    rejects(
        with(CUSTOMER, "home_country", json!("pt")),
        Some("home_country"),
        "ISO 3166-1 alpha-2",
    );
    rejects(
        with(CUSTOMER, "home_country", json!("QQ")),
        Some("home_country"),
        "ISO 3166-1 alpha-2",
    );
    rejects(
        with(CUSTOMER, "home_country", json!("PRT")),
        Some("home_country"),
        "(got \"PRT\")",
    );
    rejects(
        with(CUSTOMER, "home_country", json!("")),
        Some("home_country"),
        "ISO 3166-1",
    );
    rejects(
        with(CUSTOMER, "home_country", json!(351)),
        Some("home_country"),
        "expected a string",
    );
    rejects(
        with(CUSTOMER, "timezone", json!("Mars/Olympus")),
        Some("timezone"),
        "not an IANA time zone",
    );
    rejects(
        with(CUSTOMER, "timezone", json!("Mars/Olympus")),
        Some("timezone"),
        "Mars/Olympus",
    );
    rejects(
        with(CUSTOMER, "timezone", json!("")),
        Some("timezone"),
        "not an IANA time zone",
    );
    rejects(
        with(CUSTOMER, "timezone", json!(1)),
        Some("timezone"),
        "expected a string",
    );
    rejects(
        with(CUSTOMER, "account_id", json!(1001)),
        Some("account_id"),
        "expected a string",
    );
    for (key, value) in [
        ("address_id", json!(77)),
        ("language", json!(["pt"])),
        ("email", json!(false)),
    ] {
        rejects(with(CUSTOMER, key, value), Some(key), "expected a string");
    }
    rejects(
        with(CUSTOMER, "prepaid", json!("false")),
        Some("prepaid"),
        "expected true or false, found a string",
    );
    rejects(
        with(CUSTOMER, "prepaid", json!(0)),
        Some("prepaid"),
        "expected true or false, found a number",
    );
    rejects(
        with(CUSTOMER, "deleted", json!("true")),
        Some("deleted"),
        "expected true or false",
    );
    rejects(
        with(CUSTOMER, "deleted", json!(1)),
        Some("deleted"),
        "expected true or false",
    );
    for key in ["tenure_start", "contract_end"] {
        for text in ["2026-08-32", "31/08/2026", "2023-02-29", "2026-08-31T00:00:00Z", ""] {
            rejects(
                with(CUSTOMER, key, json!(text)),
                Some(key),
                "not a calendar date YYYY-MM-DD",
            );
        }
        rejects(with(CUSTOMER, key, json!(20_260_831)), Some(key), "expected a string");
    }
    for key in ["plan", "device", "consent"] {
        for value in [json!("x"), json!(1), json!(true), json!([{}])] {
            rejects(with(CUSTOMER, key, value), Some(key), "expected an object");
        }
    }
}

#[test]
fn customer_bad_plan() {
    let plan = |value: Value| with(CUSTOMER, "plan", value);
    let day = "plan.cycle_anchor_day";
    rejects(
        plan(json!({"cycle_anchor_day": 0})),
        Some(day),
        "a day of the month is 1 to 31 (got 0)",
    );
    rejects(
        plan(json!({"cycle_anchor_day": 32})),
        Some(day),
        "a day of the month is 1 to 31 (got 32)",
    );
    rejects(plan(json!({"cycle_anchor_day": 256})), Some(day), "1 to 31");
    rejects(plan(json!({"cycle_anchor_day": u64::MAX})), Some(day), "1 to 31");
    rejects(plan(json!({"cycle_anchor_day": -1})), Some(day), "must not be negative");
    rejects(plan(json!({"cycle_anchor_day": 1.5})), Some(day), "whole number");
    rejects(
        plan(json!({"cycle_anchor_day": "1"})),
        Some(day),
        "expected a non-negative whole number, found a string",
    );
    let bytes = "plan.data_pack_bytes";
    rejects(
        plan(json!({"data_pack_bytes": -1})),
        Some(bytes),
        "must not be negative (got -1)",
    );
    rejects(
        plan(json!({"data_pack_bytes": -1.5})),
        Some(bytes),
        "must not be negative",
    );
    rejects(plan(json!({"data_pack_bytes": 1.5})), Some(bytes), "whole number");
    rejects(plan(json!({"data_pack_bytes": "10GB"})), Some(bytes), "found a string");
    rejects(plan(json!({"data_pack_bytes": true})), Some(bytes), "found a boolean");
    rejects(
        plan(json!({"monthly_fee": -1})),
        Some("plan.monthly_fee"),
        "must not be negative",
    );
    rejects(
        plan(json!({"monthly_fee": -0.01})),
        Some("plan.monthly_fee"),
        "must not be negative",
    );
    rejects(
        plan(json!({"monthly_fee": "25"})),
        Some("plan.monthly_fee"),
        "expected a number, found a string",
    );
    rejects(
        plan(json!({"id": 7})),
        Some("plan.id"),
        "expected a string, found a number",
    );
    let err = rejects(plan(json!({"cycle_anchor_day": 0})), Some(day), "");
    assert_eq!(
        err.to_string(),
        "field `plan.cycle_anchor_day`: a day of the month is 1 to 31 (got 0)"
    );
}

#[test]
fn customer_bad_device_and_consent() {
    let device = |value: Value| with(CUSTOMER, "device", value);
    rejects(
        device(json!({"acquired": "10/03/2024"})),
        Some("device.acquired"),
        "not a calendar date YYYY-MM-DD",
    );
    rejects(
        device(json!({"acquired": "10/03/2024"})),
        Some("device.acquired"),
        "(got \"10/03/2024\")",
    );
    rejects(
        device(json!({"acquired": "2023-02-29"})),
        Some("device.acquired"),
        "not a calendar date",
    );
    rejects(
        device(json!({"acquired": 2024})),
        Some("device.acquired"),
        "expected a string",
    );
    rejects(
        device(json!({"imei": 356_789_012_345_678u64})),
        Some("device.imei"),
        "expected a string",
    );
    rejects(
        device(json!({"model": ["X"]})),
        Some("device.model"),
        "expected a string, found an array",
    );
    let consent = |value: Value| with(CUSTOMER, "consent", value);
    rejects(
        consent(json!({"sms": "yes"})),
        Some("consent.sms"),
        "expected true or false, found a string",
    );
    rejects(
        consent(json!({"email": 1})),
        Some("consent.email"),
        "expected true or false, found a number",
    );
    rejects(
        consent(json!({"push": {}})),
        Some("consent.push"),
        "expected true or false, found an object",
    );
}

#[test]
fn network_bad_fields() {
    rejects(without(NETWORK, "event"), Some("event"), "missing required field");
    let located = |text: &str| with(NETWORK_BARE, "event", json!(text));
    for name in ["attach", "location_update", "call", "sms"] {
        rejects(
            located(name),
            Some("country"),
            "needs `country` or `mcc` (except detach)",
        );
    }
    rejects(
        with(NETWORK, "event", json!("roam")),
        Some("event"),
        "unknown network event \"roam\"",
    );
    rejects(
        with(NETWORK, "event", json!("Attach")),
        Some("event"),
        "valid events are attach, location_update, detach, call, sms",
    );
    rejects(with(NETWORK, "event", json!(1)), Some("event"), "expected a string");
    for text in ["31", "3100", "31a", "+31", " 310", ""] {
        rejects(with(NETWORK, "mcc", json!(text)), Some("mcc"), "an MCC is three digits");
    }
    rejects(
        with(NETWORK, "mcc", json!(310)),
        Some("mcc"),
        "expected a string, found a number",
    );
    rejects(
        with(NETWORK_BARE, "mcc", json!("999")),
        Some("mcc"),
        "unknown Mobile Country Code 999",
    );
    rejects(
        with(NETWORK_BARE, "mcc", json!("001")),
        Some("mcc"),
        "unknown Mobile Country Code 001",
    );
    rejects(
        with(&with(NETWORK_BARE, "event", json!("detach")), "mcc", json!("999")),
        Some("mcc"),
        "unknown Mobile Country Code",
    );
    for text in ["USA", "us", "QQ", ""] {
        rejects(
            with(NETWORK, "country", json!(text)),
            Some("country"),
            "ISO 3166-1 alpha-2",
        );
    }
    rejects(
        with(&with(NETWORK_BARE, "event", json!("detach")), "country", json!("USA")),
        Some("country"),
        "ISO 3166-1",
    );
    rejects(with(NETWORK, "country", json!(1)), Some("country"), "expected a string");
    for key in ["mnc", "cell", "imei"] {
        rejects(with(NETWORK, key, json!(260)), Some(key), "expected a string");
    }
    rejects(with(NETWORK, "peer", json!("abc")), Some("peer"), "only digits");
    rejects(
        with(NETWORK, "peer", json!("0612345678")),
        Some("peer"),
        "does not start with 0",
    );
    rejects(
        with(NETWORK, "peer", json!(33_612_345_678u64)),
        Some("peer"),
        "expected a string",
    );
}

#[test]
fn usage_bad_fields() {
    rejects(without(USAGE_DATA, "kind"), Some("kind"), "missing required field");
    rejects(
        with(USAGE_DATA, "kind", json!("video")),
        Some("kind"),
        "unknown usage kind \"video\"; valid kinds are data, voice, sms",
    );
    rejects(
        with(USAGE_DATA, "kind", json!("Data")),
        Some("kind"),
        "unknown usage kind",
    );
    rejects(with(USAGE_DATA, "kind", json!(1)), Some("kind"), "expected a string");
    rejects(
        without(USAGE_DATA, "bytes"),
        Some("bytes"),
        "missing required field (usage of kind data carries `bytes`)",
    );
    rejects(
        without(USAGE_VOICE, "seconds"),
        Some("seconds"),
        "usage of kind voice carries `seconds`",
    );
    rejects(
        without(USAGE_SMS, "count"),
        Some("count"),
        "usage of kind sms carries `count`",
    );
    // Another kind's amount does not stand in for the right one.
    rejects(
        with(&without(USAGE_VOICE, "seconds"), "bytes", json!(1)),
        Some("seconds"),
        "missing required field",
    );
    rejects(
        with(USAGE_DATA, "bytes", json!(-1)),
        Some("bytes"),
        "must not be negative (got -1)",
    );
    rejects(
        with(USAGE_DATA, "bytes", json!(-0.5)),
        Some("bytes"),
        "must not be negative",
    );
    rejects(
        with(USAGE_DATA, "bytes", json!(1.5)),
        Some("bytes"),
        "expected a whole number below 2^64 (got 1.5)",
    );
    rejects(with(USAGE_DATA, "bytes", json!(1e20)), Some("bytes"), "whole number");
    rejects(
        with(USAGE_DATA, "bytes", json!("52428800")),
        Some("bytes"),
        "expected a non-negative whole number, found a string",
    );
    rejects(with(USAGE_DATA, "bytes", json!(true)), Some("bytes"), "found a boolean");
    rejects(with(USAGE_DATA, "bytes", json!([1])), Some("bytes"), "found an array");
    rejects(
        with(USAGE_VOICE, "seconds", json!("120")),
        Some("seconds"),
        "expected a non-negative whole number, found a string",
    );
    rejects(
        with(USAGE_SMS, "count", json!(-1)),
        Some("count"),
        "must not be negative",
    );
    // Out of what serde_json can read at all: not valid JSON.
    let huge = USAGE_DATA.replace("52428800", "1e400");
    rejects(huge, None, "not valid JSON (number out of range");
    // Past u64: read as a float, so not a whole number.
    let big = USAGE_DATA.replace("52428800", "99999999999999999999999");
    rejects(big, Some("bytes"), "whole number");
    let just_past = USAGE_DATA.replace("52428800", "18446744073709551616");
    rejects(just_past, Some("bytes"), "below 2^64");
    rejects(with(USAGE_VOICE, "peer", json!("+")), Some("peer"), "1 to 15 digits");
    rejects(
        with(USAGE_SMS, "peer", json!(351_912_345_678u64)),
        Some("peer"),
        "expected a string",
    );
}

#[test]
fn selfcare_bad_fields() {
    rejects(without(SELFCARE, "page"), Some("page"), "missing required field");
    rejects(without(SELFCARE, "channel"), Some("channel"), "missing required field");
    rejects(
        with(SELFCARE, "page", json!(1)),
        Some("page"),
        "expected a string, found a number",
    );
    rejects(
        with(SELFCARE, "channel", json!(["app"])),
        Some("channel"),
        "expected a string",
    );
    rejects(
        with(SELFCARE, "account_id", json!(1001)),
        Some("account_id"),
        "expected a string",
    );
}

#[test]
fn topup_bad_fields() {
    let err = rejects(
        with(TOPUP, "amount", json!(-5)),
        Some("amount"),
        "must not be negative (got -5)",
    );
    assert_eq!(err.to_string(), "field `amount`: must not be negative (got -5)");
    rejects(
        with(TOPUP, "amount", json!(-0.01)),
        Some("amount"),
        "must not be negative",
    );
    rejects(
        with(TOPUP, "amount", json!("10")),
        Some("amount"),
        "expected a number, found a string",
    );
    rejects(
        with(TOPUP, "amount", json!(true)),
        Some("amount"),
        "expected a number, found a boolean",
    );
    rejects(
        with(TOPUP, "amount", json!({"value": 10})),
        Some("amount"),
        "expected a number, found an object",
    );
    rejects(without(TOPUP, "amount"), Some("amount"), "missing required field");
    rejects(
        with(TOPUP, "currency", json!(978)),
        Some("currency"),
        "expected a string",
    );
    rejects(
        with(TOPUP, "payer", json!("0351910000001")),
        Some("payer"),
        "does not start with 0",
    );
    rejects(with(TOPUP, "payer", json!("me")), Some("payer"), "only digits");
    rejects(
        with(TOPUP, "payer", json!("12345678901234567")),
        Some("payer"),
        "1 to 15 digits",
    );
    rejects(
        with(TOPUP, "payer", json!(351_910_000_001u64)),
        Some("payer"),
        "expected a string",
    );
}

#[test]
fn response_bad_fields() {
    let err = rejects(
        with(RESPONSE, "outcome", json!("maybe")),
        Some("outcome"),
        "unknown outcome \"maybe\"",
    );
    assert!(
        err.reason.contains("delivered, clicked, accepted, declined, opted_out"),
        "{err}"
    );
    rejects(
        with(RESPONSE, "outcome", json!("Accepted")),
        Some("outcome"),
        "unknown outcome",
    );
    rejects(
        with(RESPONSE, "outcome", json!("opted-out")),
        Some("outcome"),
        "unknown outcome",
    );
    rejects(
        with(RESPONSE, "outcome", json!(1)),
        Some("outcome"),
        "expected a string",
    );
    rejects(
        without(RESPONSE, "action_id"),
        Some("action_id"),
        "missing required field",
    );
    rejects(without(RESPONSE, "outcome"), Some("outcome"), "missing required field");
    rejects(
        with(RESPONSE, "action_id", json!(42)),
        Some("action_id"),
        "expected a string",
    );
}

#[test]
fn echoed_input_is_cut_short_even_inside_a_character() {
    let long = "x".repeat(10_000);
    let err = rejects(with(TOPUP, "type", json!(long)), Some("type"), "…");
    assert!(err.reason.len() < 300, "{}", err.reason.len());
    // 63 ASCII bytes then multi-byte characters: the cut falls inside one.
    for prefix in 60..68 {
        let text = format!("{}{}", "a".repeat(prefix), "é🎉".repeat(20));
        let err = rejects(with(TOPUP, "msisdn", json!(text)), Some("msisdn"), "1 to 15 digits");
        assert!(err.reason.contains('…'), "{err}");
        let err = rejects(
            with(RESPONSE, "outcome", json!(text)),
            Some("outcome"),
            "unknown outcome",
        );
        assert!(err.reason.len() < 300);
    }
}

#[test]
fn error_display() {
    let whole = DecodeError {
        field: None,
        reason: "not a JSON object".into(),
    };
    assert_eq!(whole.to_string(), "not a JSON object");
    let at = DecodeError {
        field: Some("plan.id".into()),
        reason: "expected a string, found a number".into(),
    };
    assert_eq!(at.to_string(), "field `plan.id`: expected a string, found a number");
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

/// Every top-level field the contract defines, for any type.
const TOP_FIELDS: &[&str] = &[
    "type",
    "ts",
    "msisdn",
    "account_id",
    "address_id",
    "home_country",
    "timezone",
    "language",
    "email",
    "tenure_start",
    "prepaid",
    "plan",
    "device",
    "contract_end",
    "consent",
    "deleted",
    "event",
    "country",
    "mcc",
    "mnc",
    "cell",
    "imei",
    "peer",
    "kind",
    "bytes",
    "seconds",
    "count",
    "channel",
    "page",
    "amount",
    "currency",
    "payer",
    "action_id",
    "outcome",
];

/// Fields of the nested customer objects.
const NESTED_FIELDS: &[&str] = &[
    "id",
    "data_pack_bytes",
    "cycle_anchor_day",
    "monthly_fee",
    "imei",
    "model",
    "acquired",
    "sms",
    "email",
    "push",
];

/// Strings that mean something somewhere in the contract.
const INTERESTING: &[&str] = &[
    "customer",
    "network",
    "usage",
    "selfcare",
    "topup",
    "response",
    "2026-07-01T14:02:11Z",
    "2026-07-01T15:02:11.250+01:00",
    "1969-12-31T23:59:59Z",
    "yesterday",
    "351910000001",
    "+351910000001",
    "0351",
    "+",
    "",
    "PT",
    "US",
    "pt",
    "QQ",
    "Europe/Lisbon",
    "Mars/Olympus",
    "310",
    "268",
    "999",
    "31",
    "attach",
    "location_update",
    "detach",
    "call",
    "sms",
    "data",
    "voice",
    "accepted",
    "opted_out",
    "2024-03-10",
    "10/03/2024",
    "true",
    "0",
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep the source tree clean: a failure prints its minimal input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An RFC 3339 text for an instant in 1970..=9999 (UTC), with a random offset and
/// precision, and the milliseconds it stands for.
fn timestamp_strategy() -> impl Strategy<Value = (String, Millis)> {
    let max = NaiveDate::from_ymd_opt(9999, 12, 30)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let secs = prop_oneof![
        6 => 0..=max,
        1 => Just(0i64),
        1 => Just(max),
        2 => 1_700_000_000i64..1_900_000_000,
    ];
    let precision = prop::sample::select(vec![
        SecondsFormat::Secs,
        SecondsFormat::Millis,
        SecondsFormat::Micros,
        SecondsFormat::Nanos,
        SecondsFormat::AutoSi,
    ]);
    let offset = prop_oneof![4 => -1439i32..=1439, 1 => Just(0), 1 => Just(-1439), 1 => Just(1439)];
    (secs, 0u32..1_000_000_000, offset, precision, any::<bool>()).prop_map(
        |(secs, nanos, offset_minutes, precision, use_z)| {
            let utc = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap();
            let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let text = utc.with_timezone(&offset).to_rfc3339_opts(precision, use_z);
            let sub_millis = match precision {
                SecondsFormat::Secs => 0,
                _ => i64::from(nanos / 1_000_000),
            };
            (text, (secs * 1000 + sub_millis) as Millis)
        },
    )
}

/// A valid E.164 number as written (maybe with `+`), and the number.
fn msisdn_strategy() -> impl Strategy<Value = (String, Msisdn)> {
    ("[1-9][0-9]{0,14}", any::<bool>()).prop_map(|(digits, plus)| {
        let number = Msisdn::from_u64(digits.parse().unwrap()).unwrap();
        assert_eq!(number.to_string(), digits);
        (if plus { format!("+{digits}") } else { digits }, number)
    })
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[A-Za-z0-9-]{1,10}"]
}

fn date_strategy() -> impl Strategy<Value = NaiveDate> {
    (1900i32..=2100, 1u32..=12, 1u32..=31).prop_filter_map("a real date", |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
}

/// Money with at most two decimals, which survives JSON exactly.
fn cents_strategy() -> impl Strategy<Value = f64> {
    (0u32..100_000_000).prop_map(|cents| f64::from(cents) / 100.0)
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(TOP_FIELDS).prop_map(String::from),
        1 => prop::sample::select(NESTED_FIELDS).prop_map(String::from),
        1 => ".{0,8}",
    ]
}

fn string_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(INTERESTING).prop_map(String::from),
        1 => timestamp_strategy().prop_map(|(text, _)| text),
        1 => msisdn_strategy().prop_map(|(text, _)| text),
        1 => prop::sample::select(COUNTRIES).prop_map(|c| c.timezone.to_string()),
        2 => ".{0,16}",
    ]
}

/// Any JSON value, a few levels deep, biased towards values the contract cares about.
fn json_strategy() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..40).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        string_value_strategy().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key_strategy(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Keys no type defines.
fn unknown_key_strategy() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z_]{1,12}", ".{0,6}"]
        .prop_filter("not a contract field", |key| !TOP_FIELDS.contains(&key.as_str()))
}

/// Writes the entries as one JSON object, in order, keeping duplicates.
fn encode(pairs: &[(String, Value)]) -> String {
    let entries: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
        .collect();
    format!("{{{}}}", entries.join(","))
}

/// How a slot is typed in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Str,
    /// A non-negative whole number.
    Whole,
    /// A non-negative number.
    Amount,
    Bool,
    Obj,
}

/// A field the event's type reads (`plan.id` for nested ones).
#[derive(Clone, Copy, Debug)]
struct Slot {
    path: &'static str,
    ty: Ty,
    required: bool,
}

const fn req(path: &'static str, ty: Ty) -> Slot {
    Slot {
        path,
        ty,
        required: true,
    }
}

const fn opt(path: &'static str, ty: Ty) -> Slot {
    Slot {
        path,
        ty,
        required: false,
    }
}

/// One generated body: its entries, the event it must decode to, and the fields it reads.
#[derive(Clone, Debug)]
struct Body {
    kind: EventKind,
    pairs: Vec<(String, Value)>,
    body: EventBody,
    slots: Vec<Slot>,
}

/// A generated valid event.
#[derive(Clone, Debug)]
struct Valid {
    pairs: Vec<(String, Value)>,
    kind: EventKind,
    ts: Millis,
    msisdn: Msisdn,
    body: EventBody,
    slots: Vec<Slot>,
}

/// Adds an optional entry: the value when there is one, else `null` or nothing.
fn put(pairs: &mut Vec<(String, Value)>, key: &str, value: Option<Value>, nulls: bool) {
    match value {
        Some(value) => pairs.push((key.to_string(), value)),
        None if nulls => pairs.push((key.to_string(), Value::Null)),
        None => {}
    }
}

fn into_object(pairs: Vec<(String, Value)>) -> Value {
    Value::Object(pairs.into_iter().collect())
}

fn plan_strategy() -> impl Strategy<Value = (Value, Plan)> {
    (
        prop::option::of(text_strategy()),
        prop::option::of(any::<u64>()),
        prop::option::of(1u8..=31),
        prop::option::of(cents_strategy()),
        any::<bool>(),
        prop::option::of(json_strategy()),
    )
        .prop_map(|(id, data_pack_bytes, cycle_anchor_day, monthly_fee, nulls, extra)| {
            let mut pairs = Vec::new();
            put(&mut pairs, "id", id.clone().map(Value::from), nulls);
            put(&mut pairs, "data_pack_bytes", data_pack_bytes.map(Value::from), nulls);
            put(&mut pairs, "cycle_anchor_day", cycle_anchor_day.map(Value::from), nulls);
            put(&mut pairs, "monthly_fee", monthly_fee.map(Value::from), nulls);
            put(&mut pairs, "x-extra", extra, false);
            let plan = Plan {
                id,
                data_pack_bytes,
                cycle_anchor_day,
                monthly_fee,
            };
            (into_object(pairs), plan)
        })
}

fn device_strategy() -> impl Strategy<Value = (Value, Device)> {
    (
        prop::option::of("[0-9]{15}"),
        prop::option::of(text_strategy()),
        prop::option::of(date_strategy()),
        any::<bool>(),
    )
        .prop_map(|(imei, model, acquired, nulls)| {
            let mut pairs = Vec::new();
            put(&mut pairs, "imei", imei.clone().map(Value::from), nulls);
            put(&mut pairs, "model", model.clone().map(Value::from), nulls);
            put(
                &mut pairs,
                "acquired",
                acquired.map(|d| Value::from(d.format("%Y-%m-%d").to_string())),
                nulls,
            );
            (into_object(pairs), Device { imei, model, acquired })
        })
}

fn consent_strategy() -> impl Strategy<Value = (Value, Consent)> {
    (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(|(sms, email, push, nulls)| {
            let mut pairs = Vec::new();
            put(&mut pairs, "sms", sms.map(Value::from), nulls);
            put(&mut pairs, "email", email.map(Value::from), nulls);
            put(&mut pairs, "push", push.map(Value::from), nulls);
            let consent = Consent {
                sms: sms.unwrap_or(false),
                email: email.unwrap_or(false),
                push: push.unwrap_or(false),
            };
            (into_object(pairs), consent)
        })
}

const CUSTOMER_SLOTS: &[Slot] = &[
    opt("deleted", Ty::Bool),
    req("account_id", Ty::Str),
    req("home_country", Ty::Str),
    req("timezone", Ty::Str),
    opt("address_id", Ty::Str),
    opt("language", Ty::Str),
    opt("email", Ty::Str),
    opt("tenure_start", Ty::Str),
    opt("prepaid", Ty::Bool),
    opt("plan", Ty::Obj),
    opt("device", Ty::Obj),
    opt("contract_end", Ty::Str),
    opt("consent", Ty::Obj),
    opt("plan.id", Ty::Str),
    opt("plan.data_pack_bytes", Ty::Whole),
    opt("plan.cycle_anchor_day", Ty::Whole),
    opt("plan.monthly_fee", Ty::Amount),
    opt("device.imei", Ty::Str),
    opt("device.model", Ty::Str),
    opt("device.acquired", Ty::Str),
    opt("consent.sms", Ty::Bool),
    opt("consent.email", Ty::Bool),
    opt("consent.push", Ty::Bool),
];

fn customer_strategy() -> impl Strategy<Value = Body> {
    let deleted = Just(Body {
        kind: EventKind::Customer,
        pairs: vec![("deleted".to_string(), json!(true))],
        body: EventBody::Customer(Customer::Deleted),
        slots: vec![opt("deleted", Ty::Bool)],
    });
    let strings = (
        prop::sample::select(COUNTRIES),
        text_strategy(),
        prop::option::of(text_strategy()),
        prop::option::of("[a-z]{2}"),
        prop::option::of("[a-z]{1,8}@example\\.com"),
        prop::option::of(date_strategy()),
        prop::option::of(date_strategy()),
    );
    let rest = (
        prop::option::of(any::<bool>()),
        prop::option::of(plan_strategy()),
        prop::option::of(device_strategy()),
        prop::option::of(consent_strategy()),
        any::<bool>(),
        prop::option::of(Just(false)),
    );
    let upsert = (strings, rest).prop_map(
        |(
            (home, account_id, address_id, language, email, tenure_start, contract_end),
            (prepaid, plan, device, consent, nulls, deleted),
        )| {
            let date = |d: NaiveDate| Value::from(d.format("%Y-%m-%d").to_string());
            let mut pairs = vec![
                ("account_id".to_string(), Value::from(account_id.as_str())),
                ("home_country".to_string(), Value::from(home.code)),
                ("timezone".to_string(), Value::from(home.timezone)),
            ];
            put(&mut pairs, "address_id", address_id.clone().map(Value::from), nulls);
            put(&mut pairs, "language", language.clone().map(Value::from), nulls);
            put(&mut pairs, "email", email.clone().map(Value::from), nulls);
            put(&mut pairs, "tenure_start", tenure_start.map(date), nulls);
            put(&mut pairs, "contract_end", contract_end.map(date), nulls);
            put(&mut pairs, "prepaid", prepaid.map(Value::from), nulls);
            put(&mut pairs, "plan", plan.clone().map(|(v, _)| v), nulls);
            put(&mut pairs, "device", device.clone().map(|(v, _)| v), nulls);
            put(&mut pairs, "consent", consent.clone().map(|(v, _)| v), nulls);
            put(&mut pairs, "deleted", deleted.map(Value::from), nulls);
            let record = CustomerRecord {
                account_id,
                address_id,
                home_country: CountryCode::parse(home.code).unwrap(),
                timezone: kairos_model::TimeZone::parse(home.timezone).unwrap(),
                language,
                email,
                tenure_start,
                prepaid,
                plan: plan.map(|(_, p)| p),
                device: device.map(|(_, d)| d),
                contract_end,
                consent: consent.map(|(_, c)| c).unwrap_or_default(),
                status: Default::default(),
                status_reason: None,
                products: Vec::new(),
            };
            Body {
                kind: EventKind::Customer,
                pairs,
                body: EventBody::Customer(Customer::Upsert(Box::new(record))),
                slots: CUSTOMER_SLOTS.to_vec(),
            }
        },
    );
    prop_oneof![1 => deleted, 4 => upsert]
}

fn network_strategy() -> impl Strategy<Value = Body> {
    let kinds = vec![
        ("attach", NetworkKind::Attach),
        ("location_update", NetworkKind::LocationUpdate),
        ("detach", NetworkKind::Detach),
        ("call", NetworkKind::Call),
        ("sms", NetworkKind::Sms),
    ];
    (
        prop::sample::select(kinds),
        0u8..4,
        prop::sample::select(COUNTRIES),
        prop::sample::select(MCC_COUNTRIES),
        (
            prop::option::of("[0-9]{2,3}"),
            prop::option::of(text_strategy()),
            prop::option::of("[0-9]{15}"),
            prop::option::of(msisdn_strategy()),
        ),
        any::<bool>(),
    )
        .prop_map(
            |((name, event), location, explicit, (mcc, mcc_country), (mnc, cell, imei, peer), nulls)| {
                // 0: country only, 1: mcc only, 2: both, 3: neither (detach only).
                let location = if location == 3 && event != NetworkKind::Detach {
                    0
                } else {
                    location
                };
                let mut pairs = vec![("event".to_string(), Value::from(name))];
                let given_country = matches!(location, 0 | 2).then_some(explicit.code);
                let given_mcc = matches!(location, 1 | 2).then_some(mcc);
                put(&mut pairs, "country", given_country.map(Value::from), nulls);
                put(
                    &mut pairs,
                    "mcc",
                    given_mcc.map(|m| Value::from(format!("{m:03}"))),
                    nulls,
                );
                put(&mut pairs, "mnc", mnc.clone().map(Value::from), nulls);
                put(&mut pairs, "cell", cell.clone().map(Value::from), nulls);
                put(&mut pairs, "imei", imei.clone().map(Value::from), nulls);
                put(
                    &mut pairs,
                    "peer",
                    peer.as_ref().map(|(text, _)| Value::from(text.as_str())),
                    nulls,
                );
                let country = given_country
                    .or(given_mcc.map(|_| mcc_country))
                    .map(|code| CountryCode::parse(code).unwrap());
                let body = Network {
                    event,
                    country,
                    mcc: given_mcc,
                    mnc,
                    cell,
                    imei,
                    peer: peer.map(|(_, number)| number),
                };
                let country_required = location == 0 && event != NetworkKind::Detach;
                let slots = vec![
                    req("event", Ty::Str),
                    Slot {
                        path: "country",
                        ty: Ty::Str,
                        required: country_required,
                    },
                    opt("mcc", Ty::Str),
                    opt("mnc", Ty::Str),
                    opt("cell", Ty::Str),
                    opt("imei", Ty::Str),
                    opt("peer", Ty::Str),
                ];
                Body {
                    kind: EventKind::Network,
                    pairs,
                    body: EventBody::Network(body),
                    slots,
                }
            },
        )
}

fn usage_strategy() -> impl Strategy<Value = Body> {
    let kinds = vec![
        ("data", UsageKind::Data, "bytes"),
        ("voice", UsageKind::Voice, "seconds"),
        ("sms", UsageKind::Sms, "count"),
    ];
    let amount = prop_oneof![any::<u64>(), 0u64..10_000];
    (
        prop::sample::select(kinds),
        amount,
        prop::option::of(msisdn_strategy()),
        any::<bool>(),
    )
        .prop_map(|((name, kind, field), amount, peer, nulls)| {
            let mut pairs = vec![
                ("kind".to_string(), Value::from(name)),
                (field.to_string(), Value::from(amount)),
            ];
            put(
                &mut pairs,
                "peer",
                peer.as_ref().map(|(text, _)| Value::from(text.as_str())),
                nulls,
            );
            Body {
                kind: EventKind::Usage,
                pairs,
                body: EventBody::Usage(Usage {
                    kind,
                    amount,
                    peer: peer.map(|(_, number)| number),
                }),
                slots: vec![req("kind", Ty::Str), req(field, Ty::Whole), opt("peer", Ty::Str)],
            }
        })
}

fn selfcare_strategy() -> impl Strategy<Value = Body> {
    (
        text_strategy(),
        text_strategy(),
        prop::option::of(text_strategy()),
        any::<bool>(),
    )
        .prop_map(|(channel, page, account_id, nulls)| {
            let mut pairs = vec![
                ("channel".to_string(), Value::from(channel.as_str())),
                ("page".to_string(), Value::from(page.as_str())),
            ];
            put(&mut pairs, "account_id", account_id.clone().map(Value::from), nulls);
            Body {
                kind: EventKind::Selfcare,
                pairs,
                body: EventBody::Selfcare(Selfcare {
                    account_id,
                    channel,
                    page,
                }),
                slots: vec![
                    req("channel", Ty::Str),
                    req("page", Ty::Str),
                    opt("account_id", Ty::Str),
                ],
            }
        })
}

fn topup_strategy() -> impl Strategy<Value = Body> {
    let amount = prop_oneof![
        any::<u64>().prop_map(|n| (Value::from(n), n as f64)),
        cents_strategy().prop_map(|f| (Value::from(f), f)),
    ];
    (
        amount,
        prop::option::of("[A-Z]{3}"),
        prop::option::of(msisdn_strategy()),
        any::<bool>(),
    )
        .prop_map(|((json_amount, amount), currency, payer, nulls)| {
            let mut pairs = vec![("amount".to_string(), json_amount)];
            put(&mut pairs, "currency", currency.clone().map(Value::from), nulls);
            put(
                &mut pairs,
                "payer",
                payer.as_ref().map(|(text, _)| Value::from(text.as_str())),
                nulls,
            );
            Body {
                kind: EventKind::Topup,
                pairs,
                body: EventBody::Topup(Topup {
                    amount,
                    currency,
                    payer: payer.map(|(_, number)| number),
                }),
                slots: vec![
                    req("amount", Ty::Amount),
                    opt("currency", Ty::Str),
                    opt("payer", Ty::Str),
                ],
            }
        })
}

fn response_strategy() -> impl Strategy<Value = Body> {
    let outcomes = vec![
        ("delivered", ResponseOutcome::Delivered),
        ("clicked", ResponseOutcome::Clicked),
        ("accepted", ResponseOutcome::Accepted),
        ("declined", ResponseOutcome::Declined),
        ("opted_out", ResponseOutcome::OptedOut),
    ];
    (".{0,24}", prop::sample::select(outcomes)).prop_map(|(action_id, (name, outcome))| Body {
        kind: EventKind::Response,
        pairs: vec![
            ("action_id".to_string(), Value::from(action_id.as_str())),
            ("outcome".to_string(), Value::from(name)),
        ],
        body: EventBody::Response(Response { action_id, outcome }),
        slots: vec![req("action_id", Ty::Str), req("outcome", Ty::Str)],
    })
}

/// A valid event of any type, with fields only other types define (holding any value)
/// and unknown fields, in random order.
fn valid_strategy() -> impl Strategy<Value = Valid> {
    let body = prop_oneof![
        customer_strategy(),
        network_strategy(),
        usage_strategy(),
        selfcare_strategy(),
        topup_strategy(),
        response_strategy(),
    ];
    (
        body,
        timestamp_strategy(),
        msisdn_strategy(),
        prop::collection::vec((any::<Index>(), json_strategy()), 0..4),
        prop::collection::vec((unknown_key_strategy(), json_strategy()), 0..4),
    )
        .prop_flat_map(|(body, (ts_text, ts), (msisdn_text, msisdn), foreign, unknown)| {
            let mut pairs = vec![
                ("type".to_string(), Value::from(body.kind.as_str())),
                ("ts".to_string(), Value::from(ts_text)),
                ("msisdn".to_string(), Value::from(msisdn_text)),
            ];
            pairs.extend(body.pairs.iter().cloned());
            // Fields this body's type does not read.
            let read: Vec<&str> = body.slots.iter().map(|s| s.path).collect();
            let others: Vec<&str> = TOP_FIELDS
                .iter()
                .copied()
                .filter(|f| !["type", "ts", "msisdn"].contains(f) && !read.contains(f))
                .filter(|f| {
                    // A deleted customer ignores the upsert's fields; the property does
                    // not assert that (the contract is silent), so leave them out.
                    body.body != EventBody::Customer(Customer::Deleted) || !CUSTOMER_SLOTS.iter().any(|s| s.path == *f)
                })
                .collect();
            for (index, value) in foreign {
                pairs.push((index.get(&others).to_string(), value));
            }
            pairs.extend(unknown);
            let mut slots = vec![req("type", Ty::Str), req("ts", Ty::Str), req("msisdn", Ty::Str)];
            slots.extend(body.slots.iter().copied());
            let (kind, event_body) = (body.kind, body.body);
            Just(pairs).prop_shuffle().prop_map(move |pairs| Valid {
                pairs,
                kind,
                ts,
                msisdn,
                body: event_body.clone(),
                slots: slots.clone(),
            })
        })
}

/// Strings of the right JSON type but out of range for the field at `path`.
fn bad_strings(path: &str) -> &'static [&'static str] {
    match path {
        "type" => &["", "Customer", "cdr", " topup"],
        "ts" => &[
            "",
            "yesterday",
            "2026-07-01",
            "2026-07-01T14:02:11",
            "1969-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
        ],
        "msisdn" | "peer" | "payer" => &[
            "",
            "+",
            "0351910000001",
            "35191000000a",
            "1234567890123456",
            "+-1",
            " 1",
        ],
        "home_country" | "country" => &["", "pt", "QQ", "USA", "P"],
        "timezone" => &["", "Mars/Olympus", "Europe/Atlantis"],
        "mcc" => &["", "31", "3100", "31a", "+31", "-31"],
        "event" => &["", "roam", "Attach"],
        "kind" => &["", "video", "Data"],
        "outcome" => &["", "maybe", "Accepted", "opted-out"],
        "tenure_start" | "contract_end" | "device.acquired" => {
            &["", "10/03/2024", "2023-02-29", "2024-13-01", "2024-03-10T00:00:00Z"]
        }
        _ => &[],
    }
}

/// Values of the wrong JSON type (or out of range) for `slot`.
fn wrong_values(slot: Slot) -> Vec<Value> {
    let mut values = match slot.ty {
        Ty::Str => vec![
            json!(1),
            json!(-1),
            json!(1.5),
            json!(true),
            json!([]),
            json!(["x"]),
            json!({}),
            json!({"a": "b"}),
        ],
        Ty::Whole => vec![
            json!("1"),
            json!(true),
            json!([1]),
            json!({}),
            json!(-1),
            json!(1.5),
            json!(-0.5),
            json!(1e20),
        ],
        Ty::Amount => vec![
            json!("1"),
            json!(false),
            json!([]),
            json!({"n": 1}),
            json!(-1),
            json!(-0.25),
        ],
        Ty::Bool => vec![json!("true"), json!(1), json!(0), json!([]), json!({})],
        Ty::Obj => vec![json!("x"), json!(1), json!(true), json!([{}])],
    };
    values.extend(bad_strings(slot.path).iter().map(|s| json!(s)));
    if slot.path == "plan.cycle_anchor_day" {
        values.extend([json!(0), json!(32), json!(255), json!(256)]);
    }
    values
}

#[derive(Clone, Debug)]
enum Mutation {
    Remove,
    Null,
    Set(Value),
}

/// `pairs` with the field at `path` removed or replaced; a nested path replaces its whole
/// object with one holding only that field.
fn mutate(pairs: &[(String, Value)], path: &str, mutation: &Mutation) -> Vec<(String, Value)> {
    let mut out = pairs.to_vec();
    match path.split_once('.') {
        None => {
            out.retain(|(key, _)| key != path);
            match mutation {
                Mutation::Remove => {}
                Mutation::Null => out.push((path.to_string(), Value::Null)),
                Mutation::Set(value) => out.push((path.to_string(), value.clone())),
            }
        }
        Some((outer, inner)) => {
            out.retain(|(key, _)| key != outer);
            let value = match mutation {
                Mutation::Remove => json!({}),
                Mutation::Null => json!({ inner: null }),
                Mutation::Set(value) => json!({ inner: value }),
            };
            out.push((outer.to_string(), value));
        }
    }
    out
}

/// Mangles bytes: overwrite, insert, delete, or cut.
fn mangle(mut bytes: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let i = at.index(bytes.len());
        match op % 4 {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_bytes_give_an_event_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, AT);
    }

    #[test]
    fn json_like_bytes_give_an_event_or_an_error(
        bytes in prop::collection::vec(prop::sample::select(b"{}[]\":,0123456789-+.eE tfrulasn\\/xyz\xff\xc3".to_vec()), 0..96)
    ) {
        let _ = decode(&bytes, AT);
    }

    #[test]
    fn mangled_valid_events_give_an_event_or_an_error(
        valid in valid_strategy(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let bytes = mangle(encode(&valid.pairs).into_bytes(), &edits);
        if let Err(err) = decode(&bytes, AT) {
            prop_assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn any_object_gives_an_event_or_a_named_error(
        head in prop_oneof![
            1 => Just(Vec::<(String, Value)>::new()),
            2 => (prop::sample::select(EventKind::ALL.to_vec()), timestamp_strategy(), msisdn_strategy()).prop_map(
                |(kind, (ts, _), (msisdn, _))| vec![
                    ("type".to_string(), json!(kind.as_str())),
                    ("ts".to_string(), json!(ts)),
                    ("msisdn".to_string(), json!(msisdn)),
                ]
            ),
            2 => valid_strategy().prop_map(|valid| valid.pairs),
        ],
        tail in prop::collection::vec((key_strategy(), json_strategy()), 0..8),
    ) {
        let mut pairs = head;
        pairs.extend(tail);
        let text = encode(&pairs);
        let last = |name: &str| pairs.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value);
        match decode(text.as_bytes(), AT) {
            Ok(event) => {
                prop_assert_eq!(event.origin, AT);
                let Some(Value::String(msisdn)) = last("msisdn") else {
                    return Err(TestCaseError::fail(format!("valid without a string msisdn: {text}")));
                };
                prop_assert_eq!(event.msisdn.to_string(), msisdn.strip_prefix('+').unwrap_or(msisdn));
                let Some(Value::String(ts)) = last("ts") else {
                    return Err(TestCaseError::fail(format!("valid without a string ts: {text}")));
                };
                prop_assert_eq!(Ok(event.ts), parse_rfc3339(ts));
                prop_assert_eq!(parse_rfc3339(&format_rfc3339(event.ts)), Ok(event.ts));
                let Some(Value::String(kind)) = last("type") else {
                    return Err(TestCaseError::fail(format!("valid without a string type: {text}")));
                };
                prop_assert_eq!(event.kind().as_str(), kind.as_str());
            }
            Err(err) => {
                prop_assert!(!err.reason.is_empty());
                if let Some(field) = &err.field {
                    let known = TOP_FIELDS.contains(&field.as_str())
                        || field
                            .split_once('.')
                            .is_some_and(|(outer, inner)| ["plan", "device", "consent"].contains(&outer) && NESTED_FIELDS.contains(&inner));
                    prop_assert!(known, "error names an unknown field: {}", err);
                    let shown = err.to_string();
                    let prefix = format!("field `{field}`: ");
                    prop_assert!(shown.starts_with(&prefix), "{}", shown);
                }
            }
        }
    }

    #[test]
    fn valid_events_decode_to_what_they_say(valid in valid_strategy()) {
        let text = encode(&valid.pairs);
        let event = match decode(text.as_bytes(), AT) {
            Ok(event) => event,
            Err(err) => return Err(TestCaseError::fail(format!("`{err}` for {text}"))),
        };
        prop_assert_eq!(event.kind(), valid.kind);
        prop_assert_eq!(event.ts, valid.ts);
        prop_assert_eq!(event.msisdn, valid.msisdn);
        prop_assert_eq!(event.origin, AT);
        prop_assert_eq!(parse_rfc3339(&format_rfc3339(event.ts)), Ok(event.ts));
        prop_assert_eq!(event.body, valid.body);
    }

    #[test]
    fn a_required_field_missing_or_mistyped_is_named(
        valid in valid_strategy(),
        which in any::<Index>(),
        how in any::<Index>(),
    ) {
        let required: Vec<Slot> = valid.slots.iter().copied().filter(|s| s.required).collect();
        let slot = *which.get(&required);
        let mut mutations = vec![Mutation::Remove, Mutation::Null];
        mutations.extend(wrong_values(slot).into_iter().map(Mutation::Set));
        let mutation = how.get(&mutations);
        let text = encode(&mutate(&valid.pairs, slot.path, mutation));
        match decode(text.as_bytes(), AT) {
            Ok(event) => return Err(TestCaseError::fail(format!("{mutation:?} {} accepted: {text} -> {event:?}", slot.path))),
            Err(err) => prop_assert_eq!(err.field.as_deref(), Some(slot.path), "{} for {:?} {}: {}", err, mutation, slot.path, text),
        }
    }

    #[test]
    fn an_optional_field_mistyped_is_named(
        valid in valid_strategy(),
        which in any::<Index>(),
        how in any::<Index>(),
    ) {
        let slot = *which.get(&valid.slots);
        let values = wrong_values(slot);
        let value = how.get(&values);
        let text = encode(&mutate(&valid.pairs, slot.path, &Mutation::Set(value.clone())));
        match decode(text.as_bytes(), AT) {
            Ok(event) => return Err(TestCaseError::fail(format!("{} = {value} accepted: {text} -> {event:?}", slot.path))),
            Err(err) => prop_assert_eq!(err.field.as_deref(), Some(slot.path), "{} for {} = {}: {}", err, slot.path, value, text),
        }
    }
}

#[test]
fn whole_numbers_written_as_floats_are_accepted() {
    let at = Origin { source: 0, position: 1 };
    let event = decode(
        br#"{"type":"usage","ts":"2026-07-01T14:10:00Z","msisdn":"351910000001","kind":"data","bytes":52428800.0}"#,
        at,
    )
    .unwrap();
    let EventBody::Usage(usage) = event.body else {
        panic!("a usage record")
    };
    assert_eq!(usage.amount, 52_428_800);
    let error = decode(
        br#"{"type":"usage","ts":"2026-07-01T14:10:00Z","msisdn":"351910000001","kind":"data","bytes":0.5}"#,
        at,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "field `bytes`: expected a whole number below 2^64 (got 0.5)"
    );
}
