//! The host side: load any lock manager plugin exactly as libvirt 11.x does and call it.
//!
//! - [`Plugin::open`] follows `lock_manager.c`: `access(R_OK)`, `dlopen(RTLD_NOW | RTLD_LOCAL)`,
//!   `dlsym("virLockDriverImpl")`; [`Plugin::init`] / [`Plugin::deinit`] keep libvirt's refcount
//!   and `dlclose` only when the last `drvDeinit` returned ≥ 0.
//! - [`Manager`] is one short-lived context: New → AddResource… → an operation → Free, and no
//!   Free after a failed New.
//! - [`start_owner`] replays libvirt's pre-exec child in a real `fork()`ed process, which then
//!   `exec`s a stand-in for QEMU that keeps the returned fd, as QEMU would.
//!
//! Errors a plugin reports are captured through the host binary's exported
//! `virReportErrorHelper` (see `csrc/error_capture.c`) and, for plugins linked to libvirt, through
//! libvirt's own `virGetLastError`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::abi::{
    self, virLockDriver, virLockManager, virLockManagerParam, virLockManagerParamValue,
};
use crate::types::{AcquireFlags, Domain, LockFailureAction, NewFlags, Resource};

/// Where Debian's libvirt looks for plugins when `LIBVIRT_LOCK_MANAGER_PLUGIN_DIR` is unset.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver";

/// An error a plugin reported while a callback failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedError {
    /// `virErrorDomain` (42 = "Lock Driver error").
    pub domain: i32,
    /// `virErrorNumber` (87 = "resource busy").
    pub code: i32,
    /// The message, as the plugin formatted it.
    pub message: String,
}

impl ReportedError {
    /// The message as `virsh` shows it: libvirt prefixes a few codes with their meaning.
    pub fn rendered(&self) -> String {
        let prefix = match self.code {
            1 => "internal error: ",
            9 => "operation failed: ",
            29 => "operation forbidden: ",
            38 => "",
            67 => "unsupported configuration: ",
            87 => "resource busy: ",
            _ => "",
        };
        // Errors relayed through libvirt's RPC (lockd → virtlockd) already carry the prefix.
        if self.message.starts_with(prefix) {
            return self.message.clone();
        }
        format!("{prefix}{}", self.message)
    }
}

/// Why a host-side call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// `access(R_OK)` failed ("Plugin … not accessible").
    NotAccessible {
        /// The plugin path.
        path: PathBuf,
        /// The errno text.
        reason: String,
    },
    /// `dlopen` failed ("Failed to load plugin …").
    Load {
        /// The plugin path.
        path: PathBuf,
        /// `dlerror()`.
        reason: String,
    },
    /// `dlsym("virLockDriverImpl")` failed.
    MissingSymbol {
        /// The plugin path.
        path: PathBuf,
    },
    /// The table has a NULL slot where libvirt needs a callback.
    NullCallback {
        /// The slot name, e.g. `drvAcquire`.
        slot: &'static str,
    },
    /// A callback returned -1.
    Callback {
        /// The slot name.
        slot: &'static str,
        /// The error the plugin reported, if it reported one.
        reported: Option<ReportedError>,
    },
    /// Host-side misuse or an OS failure around a call.
    Host(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NotAccessible { path, reason } => {
                write!(f, "Plugin {} not accessible: {reason}", path.display())
            }
            HostError::Load { path, reason } => {
                write!(f, "Failed to load plugin {}: {reason}", path.display())
            }
            HostError::MissingSymbol { path } => write!(
                f,
                "Missing plugin initialization symbol '{}' in {}",
                abi::DRIVER_SYMBOL,
                path.display()
            ),
            HostError::NullCallback { slot } => {
                write!(f, "Missing '{slot}' field in lock manager driver")
            }
            HostError::Callback {
                slot,
                reported: Some(err),
            } => {
                write!(f, "{slot} failed: {}", err.rendered())
            }
            HostError::Callback {
                slot,
                reported: None,
            } => write!(
                f,
                "{slot} failed without reporting an error (libvirt would say: An error occurred, \
                 but the cause is unknown)"
            ),
            HostError::Host(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for HostError {}

/// Result of host-side calls.
pub type HostResult<T> = Result<T, HostError>;

mod capture {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    unsafe extern "C" {
        fn lockmgr_host_take_error(
            domain: *mut c_int,
            code: *mut c_int,
            buf: *mut c_char,
            len: usize,
        ) -> c_int;
    }

    /// libvirt's `virError`, up to the fields read here (virterror.h).
    #[repr(C)]
    struct VirErrorHead {
        code: c_int,
        domain: c_int,
        message: *const c_char,
    }

    type GetLastError = unsafe extern "C" fn() -> *const VirErrorHead;
    type ResetLastError = unsafe extern "C" fn();

    /// `virGetLastError` / `virResetLastError` of libvirt.so.0, as addresses (0: not loaded).
    /// Atomics rather than a lock: the forked owner child reads them too.
    static LIBVIRT_GET: AtomicUsize = AtomicUsize::new(0);
    static LIBVIRT_RESET: AtomicUsize = AtomicUsize::new(0);

    /// Looks libvirt.so.0 up once a plugin that links it is loaded (lockd.so, sanlock.so):
    /// called after each dlopen, not per call (a failed RTLD_NOLOAD lookup searches the library
    /// path, ~50 µs).
    pub(super) fn refresh_libvirt() {
        if LIBVIRT_GET.load(Ordering::Acquire) != 0 {
            return;
        }
        // SAFETY: RTLD_NOLOAD only returns a handle when the library is already loaded; the
        // handle is leaked on purpose (a refcount on a library we never unload).
        let handle = unsafe {
            libc::dlopen(
                c"libvirt.so.0".as_ptr(),
                libc::RTLD_NOLOAD | libc::RTLD_LAZY,
            )
        };
        if handle.is_null() {
            return;
        }
        // SAFETY: valid handle and NUL-terminated names.
        let (get, reset, init) = unsafe {
            (
                libc::dlsym(handle, c"virGetLastError".as_ptr()),
                libc::dlsym(handle, c"virResetLastError".as_ptr()),
                libc::dlsym(handle, c"virInitialize".as_ptr()),
            )
        };
        if get.is_null() || reset.is_null() {
            return;
        }
        // libvirtd calls virInitialize() before loading any plugin; its error storage is a
        // thread-local that does not exist until then.
        if !init.is_null() {
            // SAFETY: the public `int virInitialize(void)`, idempotent.
            let init = unsafe {
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(init)
            };
            // SAFETY: no arguments; safe to call at any time.
            unsafe { init() };
        }
        LIBVIRT_RESET.store(reset as usize, Ordering::Release);
        LIBVIRT_GET.store(get as usize, Ordering::Release);
    }

    fn libvirt_error_fns() -> Option<(GetLastError, ResetLastError)> {
        let (get, reset) = (
            LIBVIRT_GET.load(Ordering::Acquire),
            LIBVIRT_RESET.load(Ordering::Acquire),
        );
        if get == 0 || reset == 0 {
            return None;
        }
        // SAFETY: addresses stored by refresh_libvirt from dlsym of the public libvirt API:
        // `virErrorPtr virGetLastError(void)` and `void virResetLastError(void)`.
        unsafe {
            Some((
                std::mem::transmute::<usize, GetLastError>(get),
                std::mem::transmute::<usize, ResetLastError>(reset),
            ))
        }
    }

    /// Clears any error left from earlier calls on this thread.
    pub(super) fn clear() {
        let _ = take();
    }

    /// Takes this thread's last reported error, from our stand-in first, then libvirt's.
    pub(super) fn take() -> Option<ReportedError> {
        let mut buf = [0 as c_char; 2048];
        let (mut domain, mut code) = (0, 0);
        // SAFETY: valid out-pointers and a buffer of the stated length.
        let ours =
            unsafe { lockmgr_host_take_error(&mut domain, &mut code, buf.as_mut_ptr(), buf.len()) };
        let libvirt = libvirt_error_fns().and_then(|(get, reset)| {
            // SAFETY: public libvirt API; the returned pointer is valid until reset.
            let head = unsafe { get() };
            // SAFETY: NULL or a valid virError.
            let found = unsafe { head.as_ref() }
                .filter(|err| err.code != 0)
                .map(|err| ReportedError {
                    domain: err.domain,
                    code: err.code,
                    message: if err.message.is_null() {
                        String::new()
                    } else {
                        // SAFETY: libvirt's message is a NUL-terminated string.
                        unsafe { CStr::from_ptr(err.message) }
                            .to_string_lossy()
                            .into_owned()
                    },
                });
            // SAFETY: public libvirt API.
            unsafe { reset() };
            found
        });
        if ours == 1 {
            // SAFETY: the C side NUL-terminated the buffer.
            let message = unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Some(ReportedError {
                domain,
                code,
                message,
            });
        }
        libvirt
    }
}

/// A table copied out of a loaded plugin, with what the loader saw of its symbol.
#[derive(Debug, Clone, Copy)]
pub struct TableInfo {
    /// `virLockDriverImpl.version`.
    pub version: u32,
    /// `virLockDriverImpl.flags`.
    pub flags: u32,
    /// The symbol's size from the dynamic symbol table (72 expected), when known.
    pub symbol_size: Option<usize>,
}

/// A plugin loaded with `dlopen`, as libvirt holds it.
pub struct Plugin {
    path: PathBuf,
    library: Option<Library>,
    table: *const virLockDriver,
    symbol_size: Option<usize>,
    refs: usize,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("refs", &self.refs)
            .finish()
    }
}

/// Resolves `lock_manager = "NAME"` the way libvirt does: `<dir>/NAME.so`, where dir is
/// `$LIBVIRT_LOCK_MANAGER_PLUGIN_DIR` or Debian's default. Anything containing a `/` or ending in
/// `.so` is taken as a path.
pub fn locate(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') || name_or_path.ends_with(".so") {
        return PathBuf::from(name_or_path);
    }
    let dir = std::env::var_os("LIBVIRT_LOCK_MANAGER_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR));
    dir.join(format!("{name_or_path}.so"))
}

/// `<dlfcn.h>`: ask dladdr1 for the ELF symbol table entry (not in the libc crate).
const RTLD_DL_SYMENT: c_int = 1;

fn symbol_size(address: *const c_void) -> Option<usize> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let mut sym: *const libc::Elf64_Sym = std::ptr::null();
    // SAFETY: dladdr1 writes `info` and, with RTLD_DL_SYMENT, a pointer to the ELF symbol.
    let found = unsafe {
        libc::dladdr1(
            address,
            info.as_mut_ptr(),
            std::ptr::from_mut(&mut sym).cast::<*mut c_void>(),
            RTLD_DL_SYMENT,
        )
    };
    // SAFETY: when dladdr1 succeeded, `sym` is NULL or points into the loaded symbol table.
    let sym = unsafe { sym.as_ref() }.filter(|_| found != 0)?;
    usize::try_from(sym.st_size).ok()
}

impl Plugin {
    /// Loads the plugin at `path` as libvirt's `virLockManagerPluginNew` does.
    pub fn open(path: &Path) -> HostResult<Plugin> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            HostError::Host(format!("plugin path {} has a NUL byte", path.display()))
        })?;
        // SAFETY: NUL-terminated path.
        if unsafe { libc::access(c_path.as_ptr(), libc::R_OK) } != 0 {
            return Err(HostError::NotAccessible {
                path: path.to_owned(),
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        // SAFETY: loading runs the library's initialisers; that is what loading a plugin means,
        // and libvirt does exactly this.
        let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
            HostError::Load {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
        // SAFETY: the symbol is read as the address of a `virLockDriver`, as libvirt does; the
        // table is only dereferenced while `library` stays loaded.
        let table = unsafe { library.get::<*const virLockDriver>(b"virLockDriverImpl\0") }
            .map(|symbol| *symbol)
            .map_err(|_| HostError::MissingSymbol {
                path: path.to_owned(),
            })?;
        if table.is_null() {
            return Err(HostError::MissingSymbol {
                path: path.to_owned(),
            });
        }
        capture::refresh_libvirt();
        Ok(Plugin {
            path: path.to_owned(),
            symbol_size: symbol_size(table.cast::<c_void>()),
            library: Some(library),
            table,
            refs: 0,
        })
    }

    /// Wraps a table linked into this process (a plugin crate used as an rlib), for in-process
    /// tests of the same callbacks without `dlopen`.
    pub fn from_static(table: &'static virLockDriver, name: &str) -> Plugin {
        Plugin {
            path: PathBuf::from(name),
            library: None,
            symbol_size: Some(std::mem::size_of_val(table)),
            table,
            refs: 0,
        }
    }

    /// The plugin's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn table(&self) -> &virLockDriver {
        // SAFETY: `table` points into the mapping that `library` keeps loaded for our lifetime.
        unsafe { &*self.table }
    }

    /// A copy of the table and what the loader saw of the symbol.
    pub fn info(&self) -> TableInfo {
        let table = self.table();
        TableInfo {
            version: table.version,
            flags: table.flags,
            symbol_size: self.symbol_size,
        }
    }

    /// The callback slots that are NULL.
    pub fn missing_callbacks(&self) -> Vec<&'static str> {
        self.table().missing_callbacks()
    }

    /// Whether the table declares `VIR_LOCK_MANAGER_USES_STATE`.
    pub fn uses_state(&self) -> bool {
        self.table().flags & abi::VIR_LOCK_MANAGER_USES_STATE != 0
    }

    /// `drvInit(1000000, config, 0)`; libvirt passes the path even when the file is missing.
    pub fn init(&mut self, config: &Path) -> HostResult<()> {
        self.init_with_version(abi::VIR_LOCK_MANAGER_VERSION, config)
    }

    /// `drvInit` with an explicit version, for probing how a plugin checks it.
    pub fn init_with_version(&mut self, version: u32, config: &Path) -> HostResult<()> {
        let init = self
            .table()
            .drvInit
            .ok_or(HostError::NullCallback { slot: "drvInit" })?;
        let config = CString::new(config.as_os_str().as_bytes())
            .map_err(|_| HostError::Host("config path has a NUL byte".into()))?;
        capture::clear();
        // SAFETY: a valid NUL-terminated path and flags 0, as libvirt calls it.
        let rc = unsafe { init(version, config.as_ptr(), 0) };
        check("drvInit", rc)?;
        self.refs += 1;
        Ok(())
    }

    /// One unref: at the last, `drvDeinit`, then `dlclose` only if it returned ≥ 0.
    pub fn deinit(&mut self) -> HostResult<()> {
        if self.refs == 0 {
            return Err(HostError::Host("deinit without a successful init".into()));
        }
        self.refs -= 1;
        if self.refs > 0 {
            return Ok(());
        }
        let deinit = self
            .table()
            .drvDeinit
            .ok_or(HostError::NullCallback { slot: "drvDeinit" })?;
        capture::clear();
        // SAFETY: called once at the last unref, with no context left, as libvirt does.
        let rc = unsafe { deinit() };
        check("drvDeinit", rc)?;
        if let Some(library) = self.library.take() {
            // A table pointer must not outlive the mapping; nothing else reads it after this.
            self.table = &UNLOADED;
            library
                .close()
                .map_err(|e| HostError::Host(format!("dlclose {}: {e}", self.path.display())))?;
        }
        Ok(())
    }

    /// The number of successful `drvInit` calls not yet matched by a deinit.
    pub fn refs(&self) -> usize {
        self.refs
    }

    /// `drvNew` for `domain`, with libvirt's five params in libvirt's order. On failure there
    /// is no Free, as in libvirt.
    pub fn new_manager(&self, domain: &Domain, flags: NewFlags) -> HostResult<Manager<'_>> {
        let params = [
            ("uuid".to_owned(), RawParam::Uuid(domain.uuid.0)),
            ("name".to_owned(), RawParam::String(domain.name.clone())),
            ("id".to_owned(), RawParam::UInt(domain.id)),
            ("pid".to_owned(), RawParam::UInt(domain.pid)),
            ("uri".to_owned(), RawParam::CString(domain.uri.clone())),
        ];
        let flags = if flags.started {
            abi::VIR_LOCK_MANAGER_NEW_STARTED
        } else {
            0
        };
        self.new_manager_raw(&params, flags)
    }

    /// `drvNew` with hand-made params (for negative tests: unknown keys, wrong types).
    pub fn new_manager_raw(
        &self,
        params: &[(String, RawParam)],
        flags: u32,
    ) -> HostResult<Manager<'_>> {
        let new = self
            .table()
            .drvNew
            .ok_or(HostError::NullCallback { slot: "drvNew" })?;
        let owned = OwnedParams::new(params)?;
        let mut raw_params = owned.raw();
        // Zeroed, as libvirt allocates it.
        let mut raw = Box::new(virLockManager {
            driver: self.table.cast_mut(),
            privateData: std::ptr::null_mut(),
        });
        capture::clear();
        // SAFETY: a zeroed manager and params (with the strings in `owned`) valid for the call.
        let rc = unsafe {
            new(
                &mut *raw,
                abi::VIR_LOCK_MANAGER_OBJECT_TYPE_DOMAIN,
                raw_params.len(),
                raw_params.as_mut_ptr(),
                flags,
            )
        };
        check("drvNew", rc)?;
        Ok(Manager { plugin: self, raw })
    }
}

/// A table that points nowhere, swapped in after `dlclose`.
static UNLOADED: virLockDriver = virLockDriver {
    version: 0,
    flags: 0,
    drvInit: None,
    drvDeinit: None,
    drvNew: None,
    drvFree: None,
    drvAddResource: None,
    drvAcquire: None,
    drvRelease: None,
    drvInquire: None,
};

impl Drop for Plugin {
    fn drop(&mut self) {
        // libvirt leaves a plugin mapped when drvDeinit fails; without a clean deinit we do the
        // same rather than unmap code that may still be referenced.
        if let Some(library) = self.library.take() {
            std::mem::forget(library);
        }
    }
}

fn check(slot: &'static str, rc: c_int) -> HostResult<()> {
    if rc < 0 {
        return Err(HostError::Callback {
            slot,
            reported: capture::take(),
        });
    }
    Ok(())
}

/// A param value for [`Plugin::new_manager_raw`].
#[derive(Debug, Clone)]
pub enum RawParam {
    /// STRING
    String(String),
    /// CSTRING (NULL when `None`)
    CString(Option<String>),
    /// UINT
    UInt(u32),
    /// ULONG
    ULong(u64),
    /// UUID
    Uuid([u8; 16]),
    /// A type number libvirt never uses.
    UnknownType(i32),
}

/// Params and the C strings they point to, kept alive together.
struct OwnedParams {
    strings: Vec<CString>,
    entries: Vec<(usize, c_int, virLockManagerParamValue, bool)>,
}

impl OwnedParams {
    fn new(params: &[(String, RawParam)]) -> HostResult<Self> {
        let mut owned = OwnedParams {
            strings: Vec::new(),
            entries: Vec::new(),
        };
        for (key, value) in params {
            let key_index = owned.push_str(key.as_bytes())?;
            let zero = virLockManagerParamValue { ul: 0 };
            let (type_, value, string_value) = match value {
                RawParam::String(s) => {
                    let i = owned.push_str(s.as_bytes())?;
                    (
                        abi::VIR_LOCK_MANAGER_PARAM_TYPE_STRING,
                        virLockManagerParamValue { ul: i as u64 },
                        true,
                    )
                }
                RawParam::CString(Some(s)) => {
                    let i = owned.push_str(s.as_bytes())?;
                    (
                        abi::VIR_LOCK_MANAGER_PARAM_TYPE_CSTRING,
                        virLockManagerParamValue { ul: i as u64 },
                        true,
                    )
                }
                RawParam::CString(None) => (abi::VIR_LOCK_MANAGER_PARAM_TYPE_CSTRING, zero, false),
                RawParam::UInt(v) => (
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_UINT,
                    virLockManagerParamValue { ui: *v },
                    false,
                ),
                RawParam::ULong(v) => (
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_ULONG,
                    virLockManagerParamValue { ul: *v },
                    false,
                ),
                RawParam::Uuid(bytes) => (
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_UUID,
                    virLockManagerParamValue { uuid: *bytes },
                    false,
                ),
                RawParam::UnknownType(t) => (*t, zero, false),
            };
            owned.entries.push((key_index, type_, value, string_value));
        }
        Ok(owned)
    }

    fn push_str(&mut self, bytes: &[u8]) -> HostResult<usize> {
        let s = CString::new(bytes)
            .map_err(|_| HostError::Host("param string has a NUL byte".into()))?;
        self.strings.push(s);
        Ok(self.strings.len() - 1)
    }

    /// The C array; string members point into `self.strings`, so keep `self` alive meanwhile.
    fn raw(&self) -> Vec<virLockManagerParam> {
        self.entries
            .iter()
            .map(|&(key, type_, value, string_value)| {
                let value = if string_value {
                    // SAFETY: for string entries `ul` holds the index stored by `new`.
                    let index = usize::try_from(unsafe { value.ul }).unwrap_or(usize::MAX);
                    virLockManagerParamValue {
                        cstr: self.strings[index].as_ptr(),
                    }
                } else {
                    value
                };
                virLockManagerParam {
                    type_,
                    key: self.strings[key].as_ptr(),
                    value,
                }
            })
            .collect()
    }
}

/// A state string a plugin allocated for the host to `free()`.
#[derive(Debug)]
pub struct ForeignString {
    ptr: *mut c_char,
}

impl ForeignString {
    /// The text (lossy for non-UTF-8).
    pub fn text(&self) -> String {
        // SAFETY: a non-NULL NUL-terminated string from the plugin, alive until drop.
        unsafe { CStr::from_ptr(self.ptr) }
            .to_string_lossy()
            .into_owned()
    }

    /// The raw pointer, e.g. to prove in a child process that `free()` accepts it.
    pub fn as_ptr(&self) -> *mut c_char {
        self.ptr
    }
}

impl Drop for ForeignString {
    fn drop(&mut self) {
        // SAFETY: the plugin contract: state strings come from the C allocator, and libvirt
        // frees them with free(); we own this one.
        unsafe { libc::free(self.ptr.cast::<c_void>()) };
    }
}

/// One lock manager context (New … Free).
#[derive(Debug)]
pub struct Manager<'p> {
    plugin: &'p Plugin,
    raw: Box<virLockManager>,
}

impl Manager<'_> {
    /// `drvAddResource` for a typed resource.
    pub fn add_resource(&mut self, resource: &Resource) -> HostResult<()> {
        match resource {
            Resource::Disk { path, access } => self.add_resource_raw(
                abi::VIR_LOCK_MANAGER_RESOURCE_TYPE_DISK,
                path.as_os_str().as_bytes(),
                &[],
                access.to_flags(),
            ),
            Resource::Lease { lease, access } => {
                let mut params = Vec::new();
                if let Some(path) = &lease.path {
                    params.push((
                        "path".to_owned(),
                        RawParam::String(path.to_string_lossy().into_owned()),
                    ));
                }
                if let Some(offset) = lease.offset {
                    params.push(("offset".to_owned(), RawParam::ULong(offset)));
                }
                if let Some(lockspace) = &lease.lockspace {
                    params.push(("lockspace".to_owned(), RawParam::String(lockspace.clone())));
                }
                self.add_resource_raw(
                    abi::VIR_LOCK_MANAGER_RESOURCE_TYPE_LEASE,
                    lease.key.as_bytes(),
                    &params,
                    access.to_flags(),
                )
            }
        }
    }

    /// `drvAddResource` with raw values.
    pub fn add_resource_raw(
        &mut self,
        resource_type: u32,
        name: &[u8],
        params: &[(String, RawParam)],
        flags: u32,
    ) -> HostResult<()> {
        let add = self
            .plugin
            .table()
            .drvAddResource
            .ok_or(HostError::NullCallback {
                slot: "drvAddResource",
            })?;
        let name = CString::new(name)
            .map_err(|_| HostError::Host("resource name has a NUL byte".into()))?;
        let owned = OwnedParams::new(params)?;
        let mut raw_params = owned.raw();
        let params_ptr = if raw_params.is_empty() {
            std::ptr::null_mut()
        } else {
            raw_params.as_mut_ptr()
        };
        capture::clear();
        // SAFETY: a manager from a successful New, a valid name and params for the call.
        let rc = unsafe {
            add(
                &mut *self.raw,
                resource_type,
                name.as_ptr(),
                raw_params.len(),
                params_ptr,
                flags,
            )
        };
        check("drvAddResource", rc)
    }

    /// `drvAcquire(state, flags, action, want_fd ? &fd : NULL)`; returns the fd the plugin
    /// handed back for QEMU, if any.
    pub fn acquire(
        &mut self,
        state: Option<&str>,
        flags: AcquireFlags,
        action: LockFailureAction,
        want_fd: bool,
    ) -> HostResult<Option<OwnedFd>> {
        self.acquire_raw(state, flags.to_raw(), action.to_raw(), want_fd)
    }

    /// `drvAcquire` with raw flags and action.
    pub fn acquire_raw(
        &mut self,
        state: Option<&str>,
        flags: u32,
        action: i32,
        want_fd: bool,
    ) -> HostResult<Option<OwnedFd>> {
        let acquire = self
            .plugin
            .table()
            .drvAcquire
            .ok_or(HostError::NullCallback { slot: "drvAcquire" })?;
        let state = state
            .map(CString::new)
            .transpose()
            .map_err(|_| HostError::Host("state string has a NUL byte".into()))?;
        let state_ptr = state.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut fd: c_int = -1;
        let fd_ptr: *mut c_int = if want_fd {
            &mut fd
        } else {
            std::ptr::null_mut()
        };
        capture::clear();
        // SAFETY: a manager from a successful New; state NULL or valid; fd NULL or pointing at -1.
        let rc = unsafe { acquire(&mut *self.raw, state_ptr, flags as c_uint, action, fd_ptr) };
        check("drvAcquire", rc)?;
        // SAFETY: a non-negative fd the plugin handed over to us.
        Ok((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `drvRelease(want_state ? &state : NULL, 0)`, returning the string as allocated.
    pub fn release_raw(&mut self, want_state: bool) -> HostResult<Option<ForeignString>> {
        let release = self
            .plugin
            .table()
            .drvRelease
            .ok_or(HostError::NullCallback { slot: "drvRelease" })?;
        let mut state: *mut c_char = std::ptr::null_mut();
        let state_ptr: *mut *mut c_char = if want_state {
            &mut state
        } else {
            std::ptr::null_mut()
        };
        capture::clear();
        // SAFETY: a manager from a successful New; state NULL or writable.
        let rc = unsafe { release(&mut *self.raw, state_ptr, 0) };
        let result = check("drvRelease", rc);
        let owned = (!state.is_null()).then_some(ForeignString { ptr: state });
        result.map(|()| owned)
    }

    /// `drvRelease`, returning the state text.
    pub fn release(&mut self, want_state: bool) -> HostResult<Option<String>> {
        Ok(self.release_raw(want_state)?.map(|s| s.text()))
    }

    /// `drvInquire(&state, 0)`, returning the string as allocated.
    pub fn inquire_raw(&mut self) -> HostResult<Option<ForeignString>> {
        let inquire = self
            .plugin
            .table()
            .drvInquire
            .ok_or(HostError::NullCallback { slot: "drvInquire" })?;
        let mut state: *mut c_char = std::ptr::null_mut();
        capture::clear();
        // SAFETY: a manager from a successful New and a writable state pointer.
        let rc = unsafe { inquire(&mut *self.raw, &mut state, 0) };
        let result = check("drvInquire", rc);
        let owned = (!state.is_null()).then_some(ForeignString { ptr: state });
        result.map(|()| owned)
    }

    /// `drvInquire`, returning the state text.
    pub fn inquire(&mut self) -> HostResult<Option<String>> {
        Ok(self.inquire_raw()?.map(|s| s.text()))
    }
}

impl Drop for Manager<'_> {
    fn drop(&mut self) {
        if let Some(free) = self.plugin.table().drvFree {
            // SAFETY: a manager on which New succeeded, freed exactly once.
            unsafe { free(&mut *self.raw) };
        }
    }
}

/// What the forked "pre-exec child" did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// New + AddResource + Acquire(REGISTER_ONLY|RESTRICT) succeeded, and the child exec'd the
    /// QEMU stand-in.
    Registered {
        /// The fd number the plugin returned in `*fd`, if any.
        fd: Option<RawFd>,
        /// Whether that fd is still open in the stand-in after `exec` (no close-on-exec).
        fd_survived_exec: bool,
    },
    /// A step failed in the child; the child exited.
    Failed {
        /// The failing call and its reported error, as text.
        error: String,
        /// The error the plugin reported, if any.
        reported: Option<ReportedError>,
    },
}

/// A process standing in for QEMU: forked, registered with the plugin, then exec'd.
#[derive(Debug)]
pub struct ForkedOwner {
    pid: libc::pid_t,
    reaped: bool,
    /// What the child reported.
    pub outcome: RegisterOutcome,
}

impl ForkedOwner {
    /// The owner's pid (the `pid` param the plugin was given, as QEMU's pid in libvirt).
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pid).unwrap_or(0)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: c_int) -> HostResult<()> {
        if self.reaped {
            return Err(HostError::Host(format!(
                "owner {} already reaped",
                self.pid
            )));
        }
        // SAFETY: our own child, not yet reaped, so the pid cannot have been reused.
        if unsafe { libc::kill(self.pid, signal) } != 0 {
            return Err(HostError::Host(format!(
                "kill({}, {signal}): {}",
                self.pid,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Leaves the owner running after this handle is gone (it is reparented when this process
    /// exits), for tools that register an owner in one process and act on it from others.
    pub fn detach(mut self) -> u32 {
        self.reaped = true;
        self.pid()
    }

    /// SIGKILLs the owner and reaps it (as `kill -9` of QEMU).
    pub fn kill(&mut self) -> HostResult<()> {
        self.signal(libc::SIGKILL)?;
        self.wait().map(|_| ())
    }

    /// Waits for the owner to exit; returns the raw wait status.
    pub fn wait(&mut self) -> HostResult<c_int> {
        let mut status = 0;
        loop {
            // SAFETY: our own child; `status` is writable.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                self.reaped = true;
                return Ok(status);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(HostError::Host(format!("waitpid({}): {err}", self.pid)));
            }
        }
    }
}

impl Drop for ForkedOwner {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill();
        }
    }
}

/// The stand-in for QEMU that the child execs after registering: it sleeps until killed.
pub const QEMU_STANDIN: [&str; 2] = ["/bin/sleep", "infinity"];

fn write_all_raw(fd: RawFd, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: a valid fd and buffer.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast::<c_void>(), rest.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => rest = &rest[n..],
            _ => return,
        }
    }
}

/// Replays libvirt's pre-exec child: `fork()`; in the child, New(NEW_STARTED, uri) with the
/// child's own pid, AddResource for each resource, `Acquire(NULL, REGISTER_ONLY|RESTRICT,
/// action, &fd)`, Free; then `exec` of [`QEMU_STANDIN`], keeping the fd as QEMU would.
///
/// `domain.pid` is ignored: the owner's pid is the child's.
pub fn start_owner(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
    action: LockFailureAction,
) -> HostResult<ForkedOwner> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(HostError::Host(format!(
            "pipe2: {}",
            std::io::Error::last_os_error()
        )));
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    let argv: Vec<CString> = QEMU_STANDIN
        .iter()
        .map(|a| CString::new(*a).unwrap_or_default())
        .collect();
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    // SAFETY: fork() has no preconditions. The child only runs the plugin's callbacks (as
    // libvirt's child does), writes to the pipe, and execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HostError::Host(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        // SAFETY: the child closes its copy of the read end.
        unsafe { libc::close(read_end) };
        // SAFETY: getpid has no preconditions.
        let own_pid = u32::try_from(unsafe { libc::getpid() }).unwrap_or(0);
        let mut domain = domain.clone();
        domain.pid = own_pid;
        let result = (|| {
            let mut manager = plugin.new_manager(&domain, NewFlags { started: true })?;
            for resource in resources {
                manager.add_resource(resource)?;
            }
            let flags = AcquireFlags {
                register_only: true,
                restrict: true,
            };
            let fd = manager.acquire(None, flags, action, true)?;
            drop(manager);
            Ok::<_, HostError>(fd.map(std::os::fd::IntoRawFd::into_raw_fd))
        })();
        match result {
            Ok(fd) => {
                write_all_raw(write_end, format!("OK {}\n", fd.unwrap_or(-1)).as_bytes());
                // Like libvirt's QEMU, the stand-in gets its own stdio, not the caller's: a
                // detached owner must not keep a caller's pipe open.
                // SAFETY: open/dup2/close on fds of this single-threaded child.
                unsafe {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    if null >= 0 {
                        for std_fd in 0..3 {
                            if Some(std_fd) != fd {
                                libc::dup2(null, std_fd);
                            }
                        }
                        if null > 2 {
                            libc::close(null);
                        }
                    }
                }
                // SAFETY: argv is a NULL-terminated array of valid strings; on success this never
                // returns, and the CLOEXEC pipe closes, which tells the parent the exec happened.
                unsafe { libc::execv(argv_ptrs[0], argv_ptrs.as_ptr()) };
                write_all_raw(
                    write_end,
                    format!("EXEC {}\n", std::io::Error::last_os_error()).as_bytes(),
                );
                // SAFETY: leave the forked child without running the parent's atexit handlers.
                unsafe { libc::_exit(127) };
            }
            Err(err) => {
                let (domain, code, message) = match &err {
                    HostError::Callback {
                        reported: Some(r), ..
                    } => (r.domain, r.code, r.message.clone()),
                    _ => (0, 0, String::new()),
                };
                let line = format!(
                    "ERR {domain} {code} {}\t{}\n",
                    err.to_string().replace(['\n', '\t'], " "),
                    message.replace(['\n', '\t'], " ")
                );
                write_all_raw(write_end, line.as_bytes());
                // SAFETY: as above.
                unsafe { libc::_exit(1) };
            }
        }
    }
    // SAFETY: the parent closes its copy of the write end; the read end becomes a File.
    unsafe { libc::close(write_end) };
    // SAFETY: `read_end` is an open fd we own.
    let mut reader = unsafe { std::fs::File::from_raw_fd(read_end) };
    let mut report = String::new();
    let _ = reader.read_to_string(&mut report);
    let mut owner = ForkedOwner {
        pid,
        reaped: false,
        outcome: RegisterOutcome::Failed {
            error: "child reported nothing".into(),
            reported: None,
        },
    };
    owner.outcome = parse_child_report(&report, pid);
    if matches!(owner.outcome, RegisterOutcome::Failed { .. }) {
        // The child exits by itself after a failure; reap it.
        let _ = owner.wait();
    }
    Ok(owner)
}

fn parse_child_report(report: &str, pid: libc::pid_t) -> RegisterOutcome {
    let mut lines = report.lines();
    let first = lines.next().unwrap_or("");
    if let Some(rest) = first.strip_prefix("OK ") {
        if let Some(exec_err) = lines.next() {
            return RegisterOutcome::Failed {
                error: format!("exec of QEMU stand-in failed: {exec_err}"),
                reported: None,
            };
        }
        let fd: RawFd = rest.trim().parse().unwrap_or(-1);
        let fd_survived_exec = fd >= 0 && Path::new(&format!("/proc/{pid}/fd/{fd}")).exists();
        return RegisterOutcome::Registered {
            fd: (fd >= 0).then_some(fd),
            fd_survived_exec,
        };
    }
    if let Some(rest) = first.strip_prefix("ERR ") {
        let mut parts = rest.splitn(3, ' ');
        let domain = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let code = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let (error, message) = parts
            .next()
            .unwrap_or("")
            .split_once('\t')
            .unwrap_or(("", ""));
        let reported = (code != 0).then(|| ReportedError {
            domain,
            code,
            message: message.to_owned(),
        });
        return RegisterOutcome::Failed {
            error: error.to_owned(),
            reported,
        };
    }
    RegisterOutcome::Failed {
        error: format!("the child died before reporting (report: {first:?})"),
        reported: None,
    }
}
