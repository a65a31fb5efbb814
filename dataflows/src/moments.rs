//! Moments: conditions that *become* true on a subscriber's state, at event time.

use chrono::Duration;
use chrono_tz::Tz;
use kairos_model::event::{CustomerRecord, Network};
use kairos_model::{CountryCode, Millis};

use crate::calendar::local_midnight;

/// `roaming_arrival` (contract §4): a network event puts the subscriber in a country other
/// than `home_country` and other than the country of their previous network event (or they
/// had none). `previous` is the serving country before this event — events without a
/// country (`detach`) leave it unchanged.
///
/// ```
/// use kairos_model::CountryCode;
/// use kairos_dataflows::moments::is_roaming_arrival;
/// let (pt, us) = (CountryCode::parse("PT").unwrap(), CountryCode::parse("US").unwrap());
/// assert!(is_roaming_arrival(pt, None, us));
/// assert!(is_roaming_arrival(pt, Some(pt), us));
/// assert!(!is_roaming_arrival(pt, Some(us), us));
/// assert!(!is_roaming_arrival(pt, Some(us), pt));
/// ```
pub fn is_roaming_arrival(home: CountryCode, previous: Option<CountryCode>, now: CountryCode) -> bool {
    now != home && previous != Some(now)
}

/// The arrival country, if this network event is a roaming arrival for this customer.
pub fn roaming_arrival(
    customer: &CustomerRecord,
    previous: Option<CountryCode>,
    event: &Network,
) -> Option<CountryCode> {
    let now = event.country?;
    is_roaming_arrival(customer.home_country, previous, now).then_some(now)
}

/// Handset age at which `handset_ageing` can start.
pub const HANDSET_AGE_DAYS: i64 = 730;
/// How close the end of the contract must be.
pub const CONTRACT_END_WITHIN_DAYS: i64 = 60;

/// `handset_ageing` (contract §4): the instant the condition starts to hold,
/// `max(acquired + 730 days, contract_end − 60 days)`, both at local midnight; `None` when
/// the record lacks a handset acquisition date or a contract end.
pub fn handset_ageing_starts(customer: &CustomerRecord, tz: Tz) -> Option<Millis> {
    let acquired = customer.device.as_ref()?.acquired?;
    let contract_end = customer.contract_end?;
    let aged = local_midnight(acquired.checked_add_signed(Duration::days(HANDSET_AGE_DAYS))?, tz);
    let ending = local_midnight(
        contract_end.checked_sub_signed(Duration::days(CONTRACT_END_WITHIN_DAYS))?,
        tz,
    );
    Some(aged.max(ending))
}

/// The data-pack ratio of `used` bytes, when the plan has a pack.
pub fn pack_ratio(customer: &CustomerRecord, used: u64) -> Option<f64> {
    let pack = customer.plan.as_ref()?.data_pack_bytes.filter(|b| *b > 0)?;
    Some(used as f64 / pack as f64)
}
