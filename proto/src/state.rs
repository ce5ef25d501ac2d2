//! The state strings libvirt keeps for a paused domain, and hex.

use super::*;

/// Lowercase hex of `bytes`, table-driven: it runs for every resource of every request.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    hex_lower(bytes)
}

/// The prefix and version of lockmgr's state strings.
pub const STATE_PREFIX: &str = "lockmgr1";
/// A state string longer than this is refused before parsing.
pub const MAX_STATE_LEN: usize = 64 * 1024;

/// A state string: `lockmgr1:<E|S><fingerprint>,…:<checksum>`, short and XML-safe; the
/// checksum (8 hex digits of SHA-256 over the body) catches corruption.
pub fn encode_state(resources: &[(Mode, String)]) -> String {
    let mut entries: Vec<String> = resources
        .iter()
        .map(|(mode, fingerprint)| format!("{}{fingerprint}", mode.letter()))
        .collect();
    entries.sort();
    let body = format!("{STATE_PREFIX}:{}", entries.join(","));
    let checksum = hex(&Sha256::digest(body.as_bytes())[..4]);
    format!("{body}:{checksum}")
}

/// Parses and verifies a state string from libvirt (untrusted: it went through an XML file on
/// disk and maybe a migration cookie).
pub fn decode_state(state: &str) -> Result<Vec<(Mode, String)>, String> {
    let shown: String = state.chars().take(40).collect();
    let bad = |why: &str| format!("state string '{shown}…' is not a valid lockmgr state: {why}");
    if state.len() > MAX_STATE_LEN {
        return Err(bad(&format!(
            "{} bytes, more than {MAX_STATE_LEN}",
            state.len()
        )));
    }
    let mut parts = state.split(':');
    let (Some(prefix), Some(entries), Some(checksum), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected 'lockmgr1:<entries>:<checksum>'"));
    };
    if prefix != STATE_PREFIX {
        return Err(bad(&format!(
            "unknown version '{prefix}' (this daemon writes {STATE_PREFIX})"
        )));
    }
    let body = format!("{prefix}:{entries}");
    if hex(&Sha256::digest(body.as_bytes())[..4]) != checksum {
        return Err(bad("checksum mismatch (corrupted)"));
    }
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    entries
        .split(',')
        .map(|entry| {
            let (mode, fingerprint) = entry.split_at(entry.len().min(1));
            let mode = match mode {
                "E" => Mode::Exclusive,
                "S" => Mode::Shared,
                _ => return Err(bad(&format!("entry '{entry}' has no mode letter"))),
            };
            if fingerprint.len() != 16 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!(
                    "entry '{entry}' is not a resource fingerprint"
                )));
            }
            Ok((mode, fingerprint.to_owned()))
        })
        .collect()
}
