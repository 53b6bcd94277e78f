//! Object ids: BLAKE3 digests, with a typed newtype per object kind so a commit id can never be
//! passed where a row id is expected. Hex appears only at the edges (`Display` / `FromStr` /
//! serde).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::StoreError;

/// A BLAKE3 digest of an object's canonical (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }

    /// Full lower-case hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for human output.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl From<blake3::Hash> for ObjectId {
    fn from(h: blake3::Hash) -> Self {
        ObjectId(*h.as_bytes())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

impl FromStr for ObjectId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadId {
            id: s.to_string(),
            reason: reason.to_string(),
        };
        if s.len() != 64 {
            return Err(bad("expected 64 hex characters"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad("not hexadecimal"))?;
        Ok(ObjectId(out))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub ObjectId);

        impl $name {
            /// Full lower-case hex.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// The first 12 hex characters.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }
        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                Ok($name(s.parse()?))
            }
        }
        impl From<$name> for ObjectId {
            fn from(id: $name) -> ObjectId {
                id.0
            }
        }
    };
}

typed_id!(
    /// Raw bytes stored in a pack: one chunk of a binary file or one row of a dataset.
    BlobId
);
typed_id!(
    /// A file's manifest: the ordered chunks of a binary file or the ordered rows of a dataset.
    /// This is the id a tree entry (and lineage) uses for a file's content.
    ManifestId
);
typed_id!(
    /// A tree: sorted paths to entries.
    TreeId
);
typed_id!(
    /// A commit.
    CommitId
);
typed_id!(
    /// A run record (provenance of the stage that produced a commit).
    RunId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = ObjectId::of(b"hello");
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        let back: ObjectId = id.to_hex().parse().unwrap();
        assert_eq!(back, id);
        assert!("abc".parse::<ObjectId>().is_err());
        assert!("z".repeat(64).parse::<ObjectId>().is_err());
        let c: CommitId = id.to_hex().parse().unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            format!("\"{}\"", id.to_hex())
        );
    }
}
