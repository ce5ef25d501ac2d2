//! The holder's name in a DLM resource's lock value block.

use lockmgr_proto::OwnerInfo;

/// Who holds an exclusive lock, as its holder writes it into the resource's 32-byte DLM value
/// block after the grant, for the refusals of other nodes (which read it with a NL lock, never
/// waiting). Information only: the DLM alone decides who holds the lock, a missing name blocks
/// nothing, and the release marks the block not valid, so a stale name is not shown.
///
/// Layout: `LM`, format 1, the name's full length, the node id (u32 LE), the domain's uuid (16
/// bytes), the first 8 bytes of the domain's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HolderName {
    pub(super) node: u32,
    uuid: [u8; 16],
    /// The domain's name, cut to what fits (with `…` when cut).
    pub(super) name: String,
}

const HOLDER_MAGIC: [u8; 3] = [b'L', b'M', 1];
const HOLDER_NAME_BYTES: usize = 8;

impl HolderName {
    pub(super) fn new(node: u32, owner: &OwnerInfo) -> Self {
        let hex: String = owner.uuid.chars().filter(char::is_ascii_hexdigit).collect();
        let mut uuid = [0u8; 16];
        if hex.len() == 32 {
            for (i, byte) in uuid.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
            }
        }
        HolderName {
            node,
            uuid,
            name: owner.name.clone(),
        }
    }

    pub(super) fn encode(&self) -> [u8; lockmgr_dlm::VALUE_LEN] {
        let mut value = [0u8; lockmgr_dlm::VALUE_LEN];
        value[..3].copy_from_slice(&HOLDER_MAGIC);
        value[3] = u8::try_from(self.name.len()).unwrap_or(u8::MAX);
        value[4..8].copy_from_slice(&self.node.to_le_bytes());
        value[8..24].copy_from_slice(&self.uuid);
        let mut cut = self.name.len().min(HOLDER_NAME_BYTES);
        while !self.name.is_char_boundary(cut) {
            cut -= 1;
        }
        value[24..24 + cut].copy_from_slice(&self.name.as_bytes()[..cut]);
        value
    }

    pub(super) fn decode(value: &[u8; lockmgr_dlm::VALUE_LEN]) -> Option<Self> {
        if value[..3] != HOLDER_MAGIC {
            return None;
        }
        let full = usize::from(value[3]);
        let stored = &value[24..];
        let end = stored.iter().position(|b| *b == 0).unwrap_or(stored.len());
        let mut name = String::from_utf8_lossy(&stored[..end]).into_owned();
        if full > end {
            name.push('…');
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&value[8..24]);
        Some(HolderName {
            node: u32::from_le_bytes([value[4], value[5], value[6], value[7]]),
            uuid,
            name,
        })
    }

    pub(super) fn uuid(&self) -> String {
        let hex: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> OwnerInfo {
        OwnerInfo {
            uuid: "7c1e0001-5a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
            name: name.into(),
            id: 1,
            pid: 42,
            uri: None,
        }
    }

    #[test]
    fn a_holder_name_round_trips_through_the_value_block() {
        let holder = HolderName::new(3, &owner("vm1"));
        let decoded = HolderName::decode(&holder.encode()).unwrap();
        assert_eq!(decoded, holder);
        assert_eq!(decoded.uuid(), "7c1e0001-5a2b-4c3d-8e9f-0a1b2c3d4e5f");
        assert_eq!(decoded.node, 3);
    }

    #[test]
    fn a_long_name_is_cut_and_says_so() {
        let holder = HolderName::new(1, &owner("database-primary"));
        let decoded = HolderName::decode(&holder.encode()).unwrap();
        assert_eq!(decoded.name, "database…");
        // Cut on a character boundary.
        let holder = HolderName::new(1, &owner("vm-ééééé"));
        let decoded = HolderName::decode(&holder.encode()).unwrap();
        assert_eq!(decoded.name, "vm-éé…");
    }

    #[test]
    fn a_value_block_someone_else_wrote_names_nobody() {
        assert_eq!(HolderName::decode(&[7u8; lockmgr_dlm::VALUE_LEN]), None);
        assert_eq!(HolderName::decode(&[0u8; lockmgr_dlm::VALUE_LEN]), None);
    }
}
