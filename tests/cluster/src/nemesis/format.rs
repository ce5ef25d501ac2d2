//! The on-disk format: a region's header and record blocks, and where they lie on the shared
//! disk.

use serde::{Deserialize, Serialize};

/// Size of a header or record block (the disk's logical block; O_DIRECT unit).
pub const BLOCK: usize = 512;
const HEADER_MAGIC: &[u8; 8] = b"LMNHDR01";
const RECORD_MAGIC: &[u8; 8] = b"LMNREC01";

/// FNV-1a, 64 bits: a record's identity in the chain (not cryptographic; the writers are ours).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn put_u64(block: &mut [u8], at: usize, value: u64) {
    block[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u64(block: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&block[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Block 0 of a region: the last committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The last claimed generation (0: never granted).
    pub generation: u64,
    /// The next free record slot (= records committed).
    pub next: u64,
    /// [`Record::hash`] of the record in slot `next - 1` (0 for none).
    pub last_hash: u64,
    /// Who wrote it last.
    pub node: u64,
    /// The owner index on that node.
    pub owner: u64,
    /// When the current holder means to release (its node's clock, ns since the epoch): lets a
    /// nemesis pick a node that will still be writing.
    pub hold_until_ns: u64,
}

impl Header {
    /// The block's bytes.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(HEADER_MAGIC);
        for (index, value) in [
            self.generation,
            self.next,
            self.last_hash,
            self.node,
            self.owner,
            self.hold_until_ns,
        ]
        .into_iter()
        .enumerate()
        {
            put_u64(&mut block, 8 + 8 * index, value);
        }
        let sum = fnv1a(&block[..56]);
        put_u64(&mut block, 56, sum);
        block
    }

    /// A header from a block; an all-zero block is the empty region. `None`: not a valid header.
    pub fn decode(block: &[u8]) -> Option<Header> {
        if block.iter().all(|byte| *byte == 0) {
            return Some(Header::default());
        }
        if block.len() < BLOCK
            || &block[..8] != HEADER_MAGIC
            || get_u64(block, 56) != fnv1a(&block[..56])
        {
            return None;
        }
        Some(Header {
            generation: get_u64(block, 8),
            next: get_u64(block, 16),
            last_hash: get_u64(block, 24),
            node: get_u64(block, 32),
            owner: get_u64(block, 40),
            hold_until_ns: get_u64(block, 48),
        })
    }
}

/// One record a holder appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// The exclusive disk (region) index.
    pub disk: u64,
    /// The generation its holder claimed.
    pub generation: u64,
    /// The holder's node.
    pub node: u64,
    /// The holder's owner index on that node.
    pub owner: u64,
    /// The worker's incarnation (its node's boot count in the run).
    pub incarnation: u64,
    /// The worker's grant counter.
    pub grant: u64,
    /// 0, 1, 2, ... within the grant.
    pub seq: u64,
    /// Its own slot.
    pub slot: u64,
    /// [`Record::hash`] of the record in slot `slot - 1` as its writer believed it (0 in slot 0).
    pub prev: u64,
    /// When it was written (its node's clock, ns since the epoch).
    pub time_ns: u64,
}

const RECORD_FIELDS: usize = 10;
const RECORD_SUM_AT: usize = 8 + 8 * RECORD_FIELDS;

impl Record {
    fn fields(&self) -> [u64; RECORD_FIELDS] {
        [
            self.disk,
            self.generation,
            self.node,
            self.owner,
            self.incarnation,
            self.grant,
            self.seq,
            self.slot,
            self.prev,
            self.time_ns,
        ]
    }

    /// The block's bytes.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(RECORD_MAGIC);
        for (index, value) in self.fields().into_iter().enumerate() {
            put_u64(&mut block, 8 + 8 * index, value);
        }
        let sum = fnv1a(&block[..RECORD_SUM_AT]);
        put_u64(&mut block, RECORD_SUM_AT, sum);
        block
    }

    /// A record from a block, `None` when it is not one (never written, torn, or foreign).
    pub fn decode(block: &[u8]) -> Option<Record> {
        if block.len() < BLOCK
            || &block[..8] != RECORD_MAGIC
            || get_u64(block, RECORD_SUM_AT) != fnv1a(&block[..RECORD_SUM_AT])
        {
            return None;
        }
        let field = |index: usize| get_u64(block, 8 + 8 * index);
        Some(Record {
            disk: field(0),
            generation: field(1),
            node: field(2),
            owner: field(3),
            incarnation: field(4),
            grant: field(5),
            seq: field(6),
            slot: field(7),
            prev: field(8),
            time_ns: field(9),
        })
    }

    /// Its link in the chain: the checksum of its encoding.
    pub fn hash(&self) -> u64 {
        fnv1a(&self.encode()[..RECORD_SUM_AT])
    }

    /// Which grant wrote it.
    pub fn writer(&self) -> Writer {
        Writer {
            node: self.node,
            owner: self.owner,
            incarnation: self.incarnation,
            grant: self.grant,
        }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "slot {} gen {} by node{}/owner{}/inc{} grant {} seq {} (prev {:016x}, t {})",
            self.slot,
            self.generation,
            self.node,
            self.owner,
            self.incarnation,
            self.grant,
            self.seq,
            self.prev,
            self.time_ns
        )
    }
}

/// One grant of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Writer {
    /// Node.
    pub node: u64,
    /// Owner index on the node.
    pub owner: u64,
    /// The worker's incarnation.
    pub incarnation: u64,
    /// The worker's grant counter.
    pub grant: u64,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node{}/owner{}/inc{} grant {}",
            self.node, self.owner, self.incarnation, self.grant
        )
    }
}

/// Byte offset of region `disk`'s block `block`.
pub fn block_offset(region_bytes: u64, disk: u64, block: u64) -> u64 {
    disk * region_bytes + block * BLOCK as u64
}

/// Record slots a region holds.
pub fn region_capacity(region_bytes: u64) -> u64 {
    (region_bytes / BLOCK as u64).saturating_sub(1)
}
