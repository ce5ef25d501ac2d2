//! Reading a config file from disk.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::ConfError;
use crate::position::{Location, Position};
use crate::syntax::{ConfFile, parse};

/// The largest config file read: 1 MiB.
///
/// libvirt's own limit is 10 MiB (`MAX_CONFIG_FILE_SIZE`). lockmgr's is lower because the parser
/// runs inside the libvirt daemon and a parsed entry takes up to ~30 times the bytes of its text
/// (a 10 MiB file of `a=1;` would take ~300 MiB); the biggest real file, `qemu.conf`, is ~45 kB.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Reads and parses the config file at `path`.
///
/// A missing file is `Ok(None)`: libvirt passes a plugin its `qemu-NAME.conf` path whether or not
/// the file exists, and a missing file means "all defaults" (libvirt's lockd and sanlock plugins
/// treat `ENOENT` the same way). Any other failure to read is an error, as are a file larger than
/// [`MAX_FILE_SIZE`] and content that is not UTF-8. Messages start with `path`.
pub fn read_file(path: &Path) -> Result<Option<ConfFile>, ConfError> {
    let read_error = |error| ConfError::Read {
        path: path.to_owned(),
        error,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_error(error)),
    };
    // One byte over the limit is enough to know the file is too large, whatever it is (a FIFO,
    // /dev/zero): the read never grows past that.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).map_or(true, |length| length > MAX_FILE_SIZE) {
        return Err(ConfError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_SIZE,
        });
    }
    let origin = path.display().to_string();
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let bytes = error.as_bytes();
            let valid_prefix =
                std::str::from_utf8(&bytes[..error.utf8_error().valid_up_to()]).unwrap_or_default();
            let position = end_position(valid_prefix);
            return Err(ConfError::NotUtf8 {
                location: Location { origin, position },
            });
        }
    };
    Ok(Some(parse(&text, &origin)?))
}

/// The position just after `text`.
fn end_position(text: &str) -> Position {
    let line = 1 + text.matches('\n').count();
    let last_line = text.rsplit('\n').next().unwrap_or_default();
    Position {
        line,
        column: 1 + last_line.chars().count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_position_counts_lines_and_characters() {
        assert_eq!(end_position(""), Position { line: 1, column: 1 });
        assert_eq!(end_position("ab"), Position { line: 1, column: 3 });
        assert_eq!(end_position("ab\n"), Position { line: 2, column: 1 });
        assert_eq!(end_position("ab\né"), Position { line: 2, column: 2 });
    }
}
