//! Object ids: 64 hex digits, as Docker's.

/// A fresh random id.
pub fn random_id() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}
