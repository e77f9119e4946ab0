//! The binary form of a feed's last good list (`feeds/NAME.list`).
//!
//! A million entries as text take a second to format and to parse again;
//! this form is written and read in tens of milliseconds. Layout, all
//! integers little-endian:
//!
//! ```text
//! "XBLLIST1"            magic and version (8 bytes)
//! u64 entries
//! u32 ids, then per id: u32 length, UTF-8 bytes   (STIX ids, CrowdSec origins)
//! per entry: u8 family (4 or 6), u8 prefix length, 4 or 16 address bytes,
//!            u32 id index (u32::MAX: none)
//! u32 CRC-32 of everything before it
//! ```
//!
//! A file that is short, long, of another version or fails its CRC is an
//! error, never a shorter list: the caller treats the feed as lost (it is
//! fetched afresh and deletes are held until it is). `blocklist-agent list`
//! is the readable export.

use std::collections::HashMap;

use crate::{prefix::Prefix, record::Entry};

const MAGIC: &[u8; 8] = b"XBLLIST1";
const NO_ID: u32 = u32::MAX;

/// Why a list file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListFileError {
    /// Not this format (or another version of it).
    #[error("not an xdp-blocklist list file (bad magic)")]
    Magic,
    /// Cut short or with bytes past its end.
    #[error("truncated or padded at byte {0}")]
    Length(usize),
    /// The checksum does not match: the file was damaged.
    #[error("checksum mismatch (the file was damaged)")]
    Checksum,
    /// A record that is not a prefix, or an id that is not UTF-8.
    #[error("corrupt record {0}")]
    Record(usize),
}

/// Encodes entries.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut ids: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, u32> = HashMap::new();
    for e in entries {
        if let Some(id) = e.id.as_deref()
            && !index.contains_key(id)
        {
            index.insert(id, ids.len() as u32);
            ids.push(id);
        }
    }
    let mut out = Vec::with_capacity(32 + entries.len() * 10);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in &ids {
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    for e in entries {
        out.push(e.prefix.family().tag());
        out.push(e.prefix.prefix_len());
        match (e.prefix.v4_bytes(), e.prefix.v6_bytes()) {
            (Some(b), _) => out.extend_from_slice(&b),
            (None, Some(b)) => out.extend_from_slice(&b),
            (None, None) => unreachable!("a prefix is IPv4 or IPv6"),
        }
        let id = e.id.as_deref().map_or(NO_ID, |i| index[i]);
        out.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ListFileError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(ListFileError::Length(self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, ListFileError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ListFileError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// True when `bytes` start like a list file (else it may be the old text
/// form).
pub fn is_list_file(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Decodes a list file.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, ListFileError> {
    if !is_list_file(bytes) {
        return Err(ListFileError::Magic);
    }
    if bytes.len() < MAGIC.len() + 8 + 4 + 4 {
        return Err(ListFileError::Length(bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(ListFileError::Checksum);
    }
    let mut r = Reader {
        bytes: body,
        at: MAGIC.len(),
    };
    let count = r.u64()? as usize;
    let n_ids = r.u32()? as usize;
    let mut ids = Vec::with_capacity(n_ids.min(1 << 20));
    for i in 0..n_ids {
        let len = r.u32()? as usize;
        let s = std::str::from_utf8(r.take(len)?).map_err(|_| ListFileError::Record(i))?;
        ids.push(s.to_owned());
    }
    // Each record is at least 10 bytes: a count the file cannot hold is
    // damage, not an allocation to attempt.
    if count > body.len() / 10 {
        return Err(ListFileError::Length(body.len()));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let head = r.take(2)?;
        let (family, len) = (head[0], head[1]);
        let prefix = match family {
            4 => Prefix::from_v4(r.take(4)?.try_into().expect("4 bytes"), len),
            6 => Prefix::from_v6(r.take(16)?.try_into().expect("16 bytes"), len),
            _ => None,
        }
        .ok_or(ListFileError::Record(i))?;
        let id = match r.u32()? {
            NO_ID => None,
            k => Some(ids.get(k as usize).ok_or(ListFileError::Record(i))?.clone()),
        };
        out.push(Entry { prefix, id });
    }
    if r.at != body.len() {
        return Err(ListFileError::Length(r.at));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::new("192.0.2.0/24".parse().unwrap()),
            Entry {
                prefix: "2001:db8::/32".parse().unwrap(),
                id: Some("indicator--1".into()),
            },
            Entry {
                prefix: "198.51.100.7/32".parse().unwrap(),
                id: Some("cscli".into()),
            },
            Entry {
                prefix: "198.51.100.8/32".parse().unwrap(),
                id: Some("cscli".into()),
            },
        ]
    }

    #[test]
    fn round_trip_and_every_damage_is_an_error() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes).unwrap(), sample());
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        assert_eq!(decode(b"192.0.2.0/24\n"), Err(ListFileError::Magic));
        for cut in [bytes.len() - 1, 20, 8] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped), Err(ListFileError::Checksum));
    }

    proptest! {
        #[test]
        fn any_list_round_trips(
            v in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128, any::<bool>(), 0u8..4), 0..200)
        ) {
            let entries: Vec<Entry> = v
                .into_iter()
                .map(|(a4, l4, a6, l6, six, id)| {
                    let prefix = if six {
                        Prefix::from_v6(a6.to_be_bytes(), l6).unwrap()
                    } else {
                        Prefix::from_v4(a4.to_be_bytes(), l4).unwrap()
                    };
                    Entry { prefix, id: (id > 0).then(|| format!("id-{id}")) }
                })
                .collect();
            prop_assert_eq!(decode(&encode(&entries)).unwrap(), entries);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            let _ = decode(&b);
        }
    }
}
