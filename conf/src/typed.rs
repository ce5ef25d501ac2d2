//! Typed getters on [`ConfFile`], with libvirt's rules (`virConfGetValue*`).
//!
//! Each returns `Ok(None)` when the key is absent, reads the **first** entry of a key that appears
//! more than once (as libvirt does), and on a value of the wrong kind returns
//! [`ConfError::BadValue`] naming the file, line, column and key.

use std::path::PathBuf;

use crate::error::{ConfError, ValueProblem};
use crate::syntax::{ConfFile, Entry, Value};

impl ConfFile {
    /// The error for `entry`'s value.
    pub fn bad_value(&self, entry: &Entry, problem: ValueProblem) -> ConfError {
        ConfError::BadValue {
            location: self.location(entry.value_position),
            key: entry.key.clone(),
            problem,
        }
    }

    fn wrong_type(&self, entry: &Entry, expected: &'static str) -> ConfError {
        self.bad_value(
            entry,
            ValueProblem::WrongType {
                expected,
                found: entry.value.type_name(),
            },
        )
    }

    /// A boolean: libvirt booleans are the integers `0` and `1`, nothing else (no `yes`, no
    /// `"true"`), as `virConfGetValueBool` has it.
    ///
    /// One difference: libvirt also refuses `-0` (it types every number written with `-` as
    /// signed); this reads it as 0.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ConfError> {
        let Some(entry) = self.get(key) else {
            return Ok(None);
        };
        match entry.value {
            Value::Integer(0) => Ok(Some(false)),
            Value::Integer(1) => Ok(Some(true)),
            Value::Integer(other) => Err(self.bad_value(entry, ValueProblem::NotABoolean(other))),
            _ => Err(self.wrong_type(entry, "a boolean (0 or 1)")),
        }
    }

    /// Any integer.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, ConfError> {
        let Some(entry) = self.get(key) else {
            return Ok(None);
        };
        match entry.value {
            Value::Integer(integer) => Ok(Some(integer)),
            _ => Err(self.wrong_type(entry, "an integer")),
        }
    }

    /// An integer from 0 to `u32::MAX`, as `virConfGetValueUInt` takes it (except that libvirt
    /// refuses `-0` and this reads it as 0).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, ConfError> {
        let Some(entry) = self.get(key) else {
            return Ok(None);
        };
        let Value::Integer(integer) = entry.value else {
            return Err(self.wrong_type(entry, "an unsigned integer"));
        };
        u32::try_from(integer).map(Some).map_err(|_| {
            let problem = ValueProblem::OutOfRange {
                value: integer,
                min: 0,
                max: i64::from(u32::MAX),
            };
            self.bad_value(entry, problem)
        })
    }

    /// A quoted string.
    pub fn get_string(&self, key: &str) -> Result<Option<&str>, ConfError> {
        Ok(self.string_entry(key)?.map(|(_, string)| string))
    }

    /// The entry of `key` and its string, for callers that check the string further.
    pub(crate) fn string_entry(&self, key: &str) -> Result<Option<(&Entry, &str)>, ConfError> {
        let Some(entry) = self.get(key) else {
            return Ok(None);
        };
        match &entry.value {
            Value::String(string) => Ok(Some((entry, string))),
            _ => Err(self.wrong_type(entry, "a quoted string")),
        }
    }

    /// A list of strings (`[]` included). A single string is **not** taken as a one-element list:
    /// libvirt only does that for the few keys that ask for it (`compatString`), none of ours.
    pub fn get_string_list(&self, key: &str) -> Result<Option<Vec<&str>>, ConfError> {
        let Some(entry) = self.get(key) else {
            return Ok(None);
        };
        let Value::List(elements) = &entry.value else {
            return Err(self.wrong_type(entry, "a list of strings"));
        };
        let strings = elements
            .iter()
            .enumerate()
            .map(|(index, element)| match element {
                Value::String(string) => Ok(string.as_str()),
                other => Err(self.bad_value(
                    entry,
                    ValueProblem::ListElementNotString {
                        position: index + 1,
                        found: other.type_name(),
                    },
                )),
            });
        strings.collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// A quoted absolute path. Relative paths are refused: libvirt's daemons run with `/` as their
    /// working directory, so a relative path would silently mean something else.
    pub fn get_absolute_path(&self, key: &str) -> Result<Option<PathBuf>, ConfError> {
        Ok(self.absolute_path_entry(key)?.map(|(_, path)| path))
    }

    /// The entry of `key` and its absolute path, for callers that check the path further.
    pub(crate) fn absolute_path_entry(
        &self,
        key: &str,
    ) -> Result<Option<(&Entry, PathBuf)>, ConfError> {
        let Some(entry) = self.get(key) else {
            return Ok(None);
        };
        let Value::String(path) = &entry.value else {
            return Err(self.wrong_type(entry, "a quoted absolute path"));
        };
        if path.is_empty() {
            return Err(self.bad_value(entry, ValueProblem::Empty));
        }
        if !path.starts_with('/') {
            return Err(self.bad_value(entry, ValueProblem::RelativePath(path.clone())));
        }
        Ok(Some((entry, PathBuf::from(path))))
    }
}
