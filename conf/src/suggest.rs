//! "Did you mean ...?" for misspelt keys.

/// Keys longer than this are not compared (the cost is the product of the two lengths).
const MAX_COMPARED_LENGTH: usize = 128;

/// The known key closest to `key`, if it is close enough to be a plausible misspelling.
///
/// Keys are compared lower-cased and without `_`, so `autoDiskLeases` finds `auto_disk_leases`;
/// then by edit distance: at most 2 edits, or a third of the longer key.
pub(crate) fn closest_key(key: &str, known_keys: &[&'static str]) -> Option<&'static str> {
    if key.len() > MAX_COMPARED_LENGTH {
        return None;
    }
    let key = normalize(key);
    known_keys
        .iter()
        .map(|known| {
            let normalized = normalize(known);
            let distance = edit_distance(&key, &normalized);
            let close_enough = distance <= 2 || distance * 3 <= key.len().max(normalized.len());
            (distance, close_enough, *known)
        })
        .filter(|(_, close_enough, _)| *close_enough)
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, _, known)| known)
}

fn normalize(key: &str) -> Vec<u8> {
    key.bytes()
        .filter(|b| *b != b'_')
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, a_byte) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, b_byte) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_byte != b_byte);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["auto_disk_leases", "file_lockspace_dir", "socket_path"];

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance(b"", b""), 0);
        assert_eq!(edit_distance(b"abc", b""), 3);
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        assert_eq!(edit_distance(b"dirs", b"dir"), 1);
    }

    #[test]
    fn near_misses_find_the_known_key() {
        assert_eq!(
            closest_key("file_lockspace_dirs", KEYS),
            Some("file_lockspace_dir")
        );
        assert_eq!(
            closest_key("autoDiskLeases", KEYS),
            Some("auto_disk_leases")
        );
        assert_eq!(closest_key("socketpath", KEYS), Some("socket_path"));
        assert_eq!(closest_key("sock_path", KEYS), Some("socket_path"));
    }

    #[test]
    fn unrelated_keys_find_nothing() {
        assert_eq!(closest_key("host_id", KEYS), None);
        assert_eq!(closest_key(&"x".repeat(10_000), KEYS), None);
    }
}
