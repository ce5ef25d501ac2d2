//! Decoding of the raw pointers libvirt passes into owned, typed values.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::abi::{self, virLockManagerParam};
use crate::error::{Error, Result};
use crate::types::{Domain, Lease, Uuid};

/// More params than libvirt ever passes (5) by a wide margin; guards against a garbage count.
const MAX_PARAMS: usize = 256;

/// One decoded `virLockManagerParam` value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// STRING (`None` for a NULL pointer)
    String(Option<Vec<u8>>),
    /// CSTRING (`None` for a NULL pointer; `uri` is NULL for pause, detach and inquire)
    CString(Option<Vec<u8>>),
    /// INT
    Int(i32),
    /// LONG
    Long(i64),
    /// UINT
    UInt(u32),
    /// ULONG
    ULong(u64),
    /// DOUBLE
    Double(f64),
    /// UUID
    Uuid([u8; 16]),
}

impl ParamValue {
    fn type_name(&self) -> &'static str {
        match self {
            ParamValue::String(_) => "string",
            ParamValue::CString(_) => "cstring",
            ParamValue::Int(_) => "int",
            ParamValue::Long(_) => "long",
            ParamValue::UInt(_) => "uint",
            ParamValue::ULong(_) => "ulong",
            ParamValue::Double(_) => "double",
            ParamValue::Uuid(_) => "uuid",
        }
    }
}

/// A decoded param: its key and value.
pub type Param = (String, ParamValue);

/// Copies a borrowed C string.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for the call.
pub(crate) unsafe fn copy_cstr(ptr: *const c_char) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    Some(unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec())
}

/// Decodes a params array into owned values.
///
/// # Safety
/// When `nparams > 0`, `params` points to `nparams` initialised params whose key and string
/// pointers are NULL or valid NUL-terminated strings for the duration of the call.
pub(crate) unsafe fn decode_params(
    nparams: usize,
    params: *const virLockManagerParam,
) -> Result<Vec<Param>> {
    if nparams == 0 {
        return Ok(Vec::new());
    }
    if params.is_null() {
        return Err(Error::invalid_arg(format!(
            "{nparams} params announced but params is NULL"
        )));
    }
    if nparams > MAX_PARAMS {
        return Err(Error::invalid_arg(format!(
            "implausible param count {nparams}"
        )));
    }
    // SAFETY: non-NULL, and the caller guarantees `nparams` initialised elements.
    let raw = unsafe { std::slice::from_raw_parts(params, nparams) };
    raw.iter()
        .enumerate()
        .map(|(index, param)| {
            // SAFETY: key is NULL or a valid C string (caller's contract).
            let key = unsafe { copy_cstr(param.key) }
                .ok_or_else(|| Error::invalid_arg(format!("param #{index} has a NULL key")))?;
            let key = String::from_utf8_lossy(&key).into_owned();
            // SAFETY: each arm reads the union member that `type_` says was written; string
            // members are NULL or valid C strings per the caller's contract.
            let value = unsafe {
                match param.type_ {
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_STRING => {
                        ParamValue::String(copy_cstr(param.value.str_))
                    }
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_CSTRING => {
                        ParamValue::CString(copy_cstr(param.value.cstr))
                    }
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_INT => ParamValue::Int(param.value.iv),
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_LONG => ParamValue::Long(param.value.l),
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_UINT => ParamValue::UInt(param.value.ui),
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_ULONG => ParamValue::ULong(param.value.ul),
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_DOUBLE => ParamValue::Double(param.value.d),
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_UUID => ParamValue::Uuid(param.value.uuid),
                    other => {
                        return Err(Error::invalid_arg(format!(
                            "param '{key}' has unknown type {other}"
                        )));
                    }
                }
            };
            Ok((key, value))
        })
        .collect()
}

fn wrong_type(key: &str, expected: &str, got: &ParamValue) -> Error {
    Error::invalid_arg(format!(
        "param '{key}' must be of type {expected}, not {}",
        got.type_name()
    ))
}

fn utf8(key: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::invalid_arg(format!("param '{key}' is not UTF-8")))
}

/// Builds the [`Domain`] from New's params: `uuid`, `name`, `id`, `pid` required, `uri` optional.
pub fn domain_from_params(params: &[Param]) -> Result<Domain> {
    let (mut uuid, mut name, mut id, mut pid, mut uri) = (None, None, None, None, None);
    for (key, value) in params {
        match (key.as_str(), value) {
            ("uuid", ParamValue::Uuid(bytes)) => uuid = Some(Uuid(*bytes)),
            ("name", ParamValue::String(Some(bytes))) => name = Some(utf8(key, bytes.clone())?),
            ("name", ParamValue::String(None)) => {
                return Err(Error::invalid_arg("param 'name' is NULL"));
            }
            // libvirt writes the UINT id/pid through the `iv` member: same bits.
            ("id", ParamValue::UInt(v)) => id = Some(*v),
            ("pid", ParamValue::UInt(v)) => pid = Some(*v),
            ("uri", ParamValue::CString(v) | ParamValue::String(v)) => {
                uri = v.clone().map(|bytes| utf8(key, bytes)).transpose()?;
            }
            ("uuid", other) => return Err(wrong_type(key, "uuid", other)),
            ("name", other) => return Err(wrong_type(key, "string", other)),
            ("id" | "pid", other) => return Err(wrong_type(key, "uint", other)),
            ("uri", other) => return Err(wrong_type(key, "cstring", other)),
            (unknown, _) => {
                return Err(Error::invalid_arg(format!(
                    "unexpected domain param '{unknown}' (known: uuid, name, id, pid, uri)"
                )));
            }
        }
    }
    let missing =
        |what: &str| Error::invalid_arg(format!("missing '{what}' param for domain object"));
    let uuid = uuid.ok_or_else(|| missing("uuid"))?;
    if !uuid.is_plausible() {
        return Err(Error::invalid_arg(format!(
            "domain UUID {uuid} is not a valid UUID"
        )));
    }
    Ok(Domain {
        uuid,
        name: name.ok_or_else(|| missing("name"))?,
        id: id.ok_or_else(|| missing("id"))?,
        pid: pid.filter(|&p| p != 0).ok_or_else(|| missing("pid"))?,
        uri,
    })
}

/// Builds a [`Lease`] from AddResource's params: `path`, `offset`, `lockspace`.
pub fn lease_from_params(key: String, params: &[Param]) -> Result<Lease> {
    let mut lease = Lease {
        key,
        lockspace: None,
        path: None,
        offset: None,
    };
    for (name, value) in params {
        match (name.as_str(), value) {
            ("path", ParamValue::String(Some(bytes))) => {
                lease.path = Some(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)));
            }
            ("lockspace", ParamValue::String(Some(bytes))) => {
                lease.lockspace = Some(utf8(name, bytes.clone())?);
            }
            ("offset", ParamValue::ULong(v)) => lease.offset = Some(*v),
            ("path" | "lockspace", other) => return Err(wrong_type(name, "string", other)),
            ("offset", other) => return Err(wrong_type(name, "ulong", other)),
            (unknown, _) => {
                return Err(Error::invalid_arg(format!(
                    "unexpected param '{unknown}' for lease '{}' (known: path, offset, lockspace)",
                    lease.key
                )));
            }
        }
    }
    Ok(lease)
}

/// Copies `text` into memory from the C allocator, for libvirt to `free()`.
pub(crate) fn malloc_string(text: &str) -> Result<*mut c_char> {
    if text.contains('\0') {
        return Err(Error::internal("state string contains a NUL byte"));
    }
    let len = text.len();
    // SAFETY: malloc has no preconditions; the result is checked for NULL.
    let ptr = unsafe { libc::malloc(len + 1) }.cast::<u8>();
    if ptr.is_null() {
        return Err(Error::system(
            "allocate state string",
            &std::io::Error::from_raw_os_error(libc::ENOMEM),
        ));
    }
    // SAFETY: `ptr` has room for len + 1 bytes and does not overlap `text`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), ptr, len);
        *ptr.add(len) = 0;
    }
    Ok(ptr.cast::<c_char>())
}
