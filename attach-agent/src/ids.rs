//! Object ids: 64 lowercase hex digits, as Docker's, one type per kind of object.
//!
//! An id is checked once, where it enters (a state file, a cluster store record, a fresh random
//! one), so the rest of the agent can put it in a file name or a link name without looking at it
//! again, and a network id can never be passed where a container id is meant.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Length of an id, and of the short form the CLI and DNS use.
pub const ID_LEN: usize = 64;
pub const SHORT_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kind} id {id:?}: expected {ID_LEN} lowercase hex digits")]
pub struct InvalidId {
    pub kind: &'static str,
    pub id: String,
}

fn random_hex() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                $name(random_hex())
            }

            /// `s` if it is an id (64 lowercase hex digits).
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                if is_id(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(InvalidId {
                        kind: $kind,
                        id: s.to_string(),
                    })
                }
            }

            /// A fixed id named by a short tag (its bytes in hex, left-padded with zeros), for
            /// tests that want readable, distinct ids.
            #[cfg(test)]
            pub fn for_test(tag: &str) -> Self {
                let hex: String = tag.bytes().map(|b| format!("{b:02x}")).collect();
                assert!(hex.len() <= ID_LEN, "test id tag too long: {tag}");
                $name(format!("{hex:0>64}"))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The first 12 digits, as `docker ps` shows them and DNS answers them.
            pub fn short(&self) -> &str {
                &self.0[..SHORT_LEN]
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                if is_id(&s) {
                    Ok($name(s))
                } else {
                    Err(InvalidId { kind: $kind, id: s })
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&$name> for $name {
            fn eq(&self, other: &&$name) -> bool {
                self == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A network's id.
    NetworkId,
    "network"
);
id_type!(
    /// A container's id.
    ContainerId,
    "container"
);
id_type!(
    /// An endpoint's id (a container's attachment to one network).
    EndpointId,
    "endpoint"
);
id_type!(
    /// This agent's own id, made at its first start and kept in its state directory: the mark
    /// on every link it makes, so that two agents on one host (or an agent and anything else
    /// using the same name prefix) never take each other's links for leftovers.
    InstanceId,
    "instance"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_lowercase_hex_digits() {
        let id = NetworkId::random();
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(NetworkId::parse(&id).unwrap(), id);
        assert_eq!(id.short(), &id[..12]);
        for bad in [
            "",
            "abc",
            "/../../../../etc/x",
            &"A".repeat(64),
            &format!("{}é", "a".repeat(62)),
            &"a".repeat(65),
        ] {
            let e = ContainerId::parse(bad).unwrap_err();
            assert_eq!(e.kind, "container");
        }
    }

    #[test]
    fn a_bad_id_in_json_is_refused() {
        let ok: NetworkId = serde_json::from_str(&format!("\"{}\"", "0".repeat(64))).unwrap();
        assert_eq!(ok.as_str(), "0".repeat(64));
        let e = serde_json::from_str::<NetworkId>("\"../x\"").unwrap_err();
        assert!(e.to_string().contains("invalid network id"), "{e}");
    }
}
