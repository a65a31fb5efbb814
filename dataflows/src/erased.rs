//! Numbers erased by `"deleted": true`, as the state store keeps them: not the number, but
//! a keyed hash of it ([`ErasedIndex::key`]: SHA-256 of a random per-store salt and the
//! number, 16 bytes), with the `ts` of the deletion — so that an older record arriving
//! later cannot resurrect the subscriber and an event for the number builds no state, while
//! no file of the state folder holds the number itself. (The salt lives in the same folder:
//! the hash is pseudonymous, not anonymous — whoever holds the folder can test a number
//! against it, as they could test it against the operator's CRM; it cannot be listed.)

use kairos_model::{Millis, Msisdn};
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

/// The stored form of an erased number.
pub type ErasedKey = [u8; 16];

/// The erased numbers a restart knows of, by keyed hash.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErasedIndex {
    salt: Vec<u8>,
    since: FxHashMap<ErasedKey, Millis>,
}

impl ErasedIndex {
    /// An index over `erased` (key, `ts` of the deletion), hashed with `salt`.
    pub fn new(salt: Vec<u8>, erased: impl IntoIterator<Item = (ErasedKey, Millis)>) -> ErasedIndex {
        ErasedIndex {
            salt,
            since: erased.into_iter().collect(),
        }
    }

    /// The stored key of `msisdn` under `salt`.
    pub fn key(salt: &[u8], msisdn: Msisdn) -> ErasedKey {
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update(msisdn.as_u64().to_be_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&hasher.finalize()[..16]);
        key
    }

    /// When `msisdn` was erased, if it was before the restored checkpoint.
    pub fn since(&self, msisdn: Msisdn) -> Option<Millis> {
        if self.since.is_empty() {
            return None;
        }
        self.since.get(&ErasedIndex::key(&self.salt, msisdn)).copied()
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_found_by_its_keyed_hash_and_the_key_depends_on_the_salt() {
        let a = Msisdn::from_u64(351_910_000_001).unwrap();
        let b = Msisdn::from_u64(351_910_000_002).unwrap();
        let index = ErasedIndex::new(b"salt".to_vec(), [(ErasedIndex::key(b"salt", a), 42)]);
        assert_eq!(index.since(a), Some(42));
        assert_eq!(index.since(b), None);
        assert_ne!(ErasedIndex::key(b"salt", a), ErasedIndex::key(b"other", a));
        // The key does not hold the number in any plain form.
        let key = ErasedIndex::key(b"salt", a);
        assert!(!key
            .windows(8)
            .any(|w| w == a.as_u64().to_be_bytes() || w == a.as_u64().to_le_bytes()));
    }
}
