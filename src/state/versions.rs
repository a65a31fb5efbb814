//! The versions of a stored subscriber value. The byte in front says which:
//!
//! | byte | kairos | value |
//! |---|---|---|
//! | `0x02` | this release | bincode of [`SubscriberState`] |
//! | `0x01` | before `recent` (layout 3) | bincode of [`V1`]: the same fields but the last |
//!
//! bincode is not self-describing, so an added field cannot be defaulted while decoding:
//! the old value is read as its own frozen type and completed. A version-1 value is upgraded
//! when its state is written again (the next checkpoint that changes it); `recent` starts
//! empty, with the last event counted from the checkpoint it is restored from
//! (`SubscriberLogic::restore`).

use kairos_dataflows::evidence::HouseholdState;
use kairos_dataflows::features::Activity;
use kairos_dataflows::policy::ContactHistory;
use kairos_dataflows::state::{CustomerState, DataCycle, Recent, SubscriberState};
use kairos_model::{CountryCode, Millis};
use serde::{Deserialize, Serialize};

use super::{decode_body, Limit, StateError};

/// The byte in front of a subscriber value written by this release.
const SUBSCRIBER_VERSION: u8 = 2;

/// A subscriber value of version 1, as kairos wrote it before `recent`. Frozen: never
/// change it; a later change of [`SubscriberState`] gets a version 3 and its own type.
#[derive(Deserialize, Serialize)]
pub(super) struct V1 {
    customer: CustomerState,
    country: Option<CountryCode>,
    previous_country: Option<CountryCode>,
    data_cycle: Option<DataCycle>,
    unassigned_data: Vec<(Millis, u64)>,
    fired: Vec<(String, String)>,
    contacts: ContactHistory,
    activity: Activity,
    household: HouseholdState,
}

impl From<V1> for SubscriberState {
    fn from(v1: V1) -> SubscriberState {
        SubscriberState {
            customer: v1.customer,
            country: v1.country,
            previous_country: v1.previous_country,
            data_cycle: v1.data_cycle,
            unassigned_data: v1.unassigned_data,
            fired: v1.fired,
            contacts: v1.contacts,
            activity: v1.activity,
            household: v1.household,
            recent: Recent::default(),
        }
    }
}

/// The bytes stored for a subscriber's state.
pub(super) fn encode_subscriber(state: &SubscriberState) -> Vec<u8> {
    let mut bytes = vec![SUBSCRIBER_VERSION];
    // Serialising plain data to a Vec cannot fail.
    bytes.extend(bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap_or_default());
    bytes
}

/// Decodes a stored subscriber value of any version this kairos reads.
pub(super) fn decode_subscriber(key: impl Fn() -> String, bytes: &[u8]) -> Result<SubscriberState, StateError> {
    match bytes.split_first() {
        Some((&SUBSCRIBER_VERSION, rest)) => decode_body(key, rest, Limit::Subscriber),
        Some((1, rest)) => decode_body::<V1>(key, rest, Limit::Subscriber).map(SubscriberState::from),
        Some((version, _)) => Err(StateError::Corrupt {
            key: key(),
            reason: format!("unknown value version {version}"),
        }),
        None => Err(StateError::Corrupt {
            key: key(),
            reason: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_dataflows::state::CustomerState;

    #[test]
    fn a_value_of_version_1_reads_as_the_same_state_with_recent_empty() {
        let v1 = V1 {
            customer: CustomerState::Deleted { since: 42 },
            country: Some(CountryCode::parse("ES").unwrap()),
            previous_country: Some(CountryCode::parse("PT").unwrap()),
            data_cycle: None,
            unassigned_data: vec![(7, 1_000)],
            fired: vec![("roaming-welcome".into(), "ES".into())],
            contacts: ContactHistory::default(),
            activity: Activity::default(),
            household: HouseholdState::default(),
        };
        let mut bytes = vec![1];
        bytes.extend(bincode::serde::encode_to_vec(&v1, bincode::config::standard()).unwrap());
        let state = decode_subscriber(|| "s".into(), &bytes).unwrap();
        assert_eq!(state.customer, CustomerState::Deleted { since: 42 });
        assert_eq!(state.previous_country, Some(CountryCode::parse("PT").unwrap()));
        assert_eq!(state.unassigned_data, vec![(7, 1_000)]);
        assert_eq!(state.fired, vec![("roaming-welcome".to_string(), "ES".to_string())]);
        assert_eq!(state.recent, Recent::default());
        // Written again, it is a value of this release's version, and reads back the same.
        let again = encode_subscriber(&state);
        assert_eq!(again[0], SUBSCRIBER_VERSION);
        assert_eq!(decode_subscriber(|| "s".into(), &again).unwrap(), state);
        // A version-2 value is not read as a version 1 one, nor the other way round.
        let mut wrong = again.clone();
        wrong[0] = 1;
        assert!(decode_subscriber(|| "s".into(), &wrong).is_err());
    }
}
