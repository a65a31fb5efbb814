//! Moments: conditions that *become* true on a subscriber's state, at event time.

use kairos_model::event::{CustomerRecord, Network};
use kairos_model::CountryCode;

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
