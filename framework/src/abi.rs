//! The `#[repr(C)]` ABI of libvirt's `src/locking/lock_driver.h` (plugin ABI 1.0.0).
//!
//! libvirt installs no header for it, so the layout is declared here and pinned by compile-time
//! assertions against the x86_64 values measured on libvirt 11.3.

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `VIR_LOCK_MANAGER_VERSION`: major × 1 000 000 + minor × 1 000 + micro.
pub const VIR_LOCK_MANAGER_VERSION: c_uint = 1_000_000;
/// A different major version means an incompatible ABI.
pub const VIR_LOCK_MANAGER_VERSION_MAJOR: c_uint = 1;

/// `virLockDriver.flags`: the plugin returns state strings from Release/Inquire.
pub const VIR_LOCK_MANAGER_USES_STATE: c_uint = 1;

/// New `type`: the only object type.
pub const VIR_LOCK_MANAGER_OBJECT_TYPE_DOMAIN: c_uint = 0;

/// AddResource `type`: a disk image, by path.
pub const VIR_LOCK_MANAGER_RESOURCE_TYPE_DISK: c_uint = 0;
/// AddResource `type`: a `<lease>`, by key.
pub const VIR_LOCK_MANAGER_RESOURCE_TYPE_LEASE: c_uint = 1;

/// AddResource flag: `<readonly/>`.
pub const VIR_LOCK_MANAGER_RESOURCE_READONLY: c_uint = 1;
/// AddResource flag: `<shareable/>`.
pub const VIR_LOCK_MANAGER_RESOURCE_SHARED: c_uint = 2;

/// Acquire flag: only register the owner (the pre-exec child), take nothing.
pub const VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY: c_uint = 1;
/// Acquire flag: the connection handed to QEMU must accept nothing more.
pub const VIR_LOCK_MANAGER_ACQUIRE_RESTRICT: c_uint = 2;

/// New flag: the context for the process start.
pub const VIR_LOCK_MANAGER_NEW_STARTED: c_uint = 1;

/// `virLockManagerParam.type` values.
pub const VIR_LOCK_MANAGER_PARAM_TYPE_STRING: c_int = 0;
/// A `const char *` (the `uri` param).
pub const VIR_LOCK_MANAGER_PARAM_TYPE_CSTRING: c_int = 1;
/// An `int`.
pub const VIR_LOCK_MANAGER_PARAM_TYPE_INT: c_int = 2;
/// A `long long`.
pub const VIR_LOCK_MANAGER_PARAM_TYPE_LONG: c_int = 3;
/// An `unsigned int` (`id`, `pid`).
pub const VIR_LOCK_MANAGER_PARAM_TYPE_UINT: c_int = 4;
/// An `unsigned long long` (lease `offset`).
pub const VIR_LOCK_MANAGER_PARAM_TYPE_ULONG: c_int = 5;
/// A `double`.
pub const VIR_LOCK_MANAGER_PARAM_TYPE_DOUBLE: c_int = 6;
/// 16 raw bytes (`uuid`).
pub const VIR_LOCK_MANAGER_PARAM_TYPE_UUID: c_int = 7;

/// `virDomainLockFailureAction` values (`<on_lockfailure>`), passed by value to Acquire.
pub const VIR_DOMAIN_LOCK_FAILURE_DEFAULT: c_int = 0;
/// `poweroff`
pub const VIR_DOMAIN_LOCK_FAILURE_POWEROFF: c_int = 1;
/// `restart`
pub const VIR_DOMAIN_LOCK_FAILURE_RESTART: c_int = 2;
/// `pause`
pub const VIR_DOMAIN_LOCK_FAILURE_PAUSE: c_int = 3;
/// `ignore`
pub const VIR_DOMAIN_LOCK_FAILURE_IGNORE: c_int = 4;

/// `VIR_FROM_LOCKING`: errors render as "Lock Driver error".
pub const VIR_FROM_LOCKING: c_int = 42;

/// `VIR_UUID_BUFLEN`
pub const VIR_UUID_BUFLEN: usize = 16;

/// The value union of [`virLockManagerParam`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union virLockManagerParamValue {
    /// INT (and, bit for bit, the UINT `id`/`pid` as libvirt writes them)
    pub iv: c_int,
    /// LONG
    pub l: i64,
    /// UINT
    pub ui: c_uint,
    /// ULONG
    pub ul: u64,
    /// DOUBLE
    pub d: f64,
    /// STRING
    pub str_: *mut c_char,
    /// CSTRING
    pub cstr: *const c_char,
    /// UUID, raw bytes
    pub uuid: [u8; VIR_UUID_BUFLEN],
}

impl std::fmt::Debug for virLockManagerParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("virLockManagerParamValue { .. }")
    }
}

/// One `virLockManagerParam` (32 bytes on x86_64).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct virLockManagerParam {
    /// One of the `VIR_LOCK_MANAGER_PARAM_TYPE_*` values.
    pub type_: c_int,
    /// The parameter's name, borrowed for the call.
    pub key: *const c_char,
    /// The value; which member is valid depends on `type_`.
    pub value: virLockManagerParamValue,
}

/// `virLockManager`: allocated zeroed by libvirt for each operation.
#[repr(C)]
#[derive(Debug)]
pub struct virLockManager {
    /// libvirt's pointer to the plugin's table.
    pub driver: *mut virLockDriver,
    /// The plugin's per-object state; NULL when `drvNew` is entered.
    pub privateData: *mut c_void,
}

/// `drvInit(version, configFile, flags)`
pub type virLockDriverInit =
    unsafe extern "C" fn(version: c_uint, configFile: *const c_char, flags: c_uint) -> c_int;
/// `drvDeinit()`
pub type virLockDriverDeinit = unsafe extern "C" fn() -> c_int;
/// `drvNew(man, type, nparams, params, flags)`
pub type virLockDriverNew = unsafe extern "C" fn(
    man: *mut virLockManager,
    type_: c_uint,
    nparams: usize,
    params: *mut virLockManagerParam,
    flags: c_uint,
) -> c_int;
/// `drvFree(man)`
pub type virLockDriverFree = unsafe extern "C" fn(man: *mut virLockManager);
/// `drvAddResource(man, type, name, nparams, params, flags)`
pub type virLockDriverAddResource = unsafe extern "C" fn(
    man: *mut virLockManager,
    type_: c_uint,
    name: *const c_char,
    nparams: usize,
    params: *mut virLockManagerParam,
    flags: c_uint,
) -> c_int;
/// `drvAcquire(man, state, flags, action, fd)`
pub type virLockDriverAcquire = unsafe extern "C" fn(
    man: *mut virLockManager,
    state: *const c_char,
    flags: c_uint,
    action: c_int,
    fd: *mut c_int,
) -> c_int;
/// `drvRelease(man, state, flags)`
pub type virLockDriverRelease =
    unsafe extern "C" fn(man: *mut virLockManager, state: *mut *mut c_char, flags: c_uint) -> c_int;
/// `drvInquire(man, state, flags)`
pub type virLockDriverInquire =
    unsafe extern "C" fn(man: *mut virLockManager, state: *mut *mut c_char, flags: c_uint) -> c_int;

/// `virLockDriver`, exported by every plugin as the data symbol `virLockDriverImpl` (72 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct virLockDriver {
    /// The ABI version the plugin implements; libvirt never reads it.
    pub version: c_uint,
    /// `0` or [`VIR_LOCK_MANAGER_USES_STATE`].
    pub flags: c_uint,
    /// Called without a NULL check by libvirt.
    pub drvInit: Option<virLockDriverInit>,
    /// Called without a NULL check by libvirt.
    pub drvDeinit: Option<virLockDriverDeinit>,
    /// Per-object: set up a context.
    pub drvNew: Option<virLockDriverNew>,
    /// Per-object: free the context (only after a successful New).
    pub drvFree: Option<virLockDriverFree>,
    /// Per-object: add a disk or lease.
    pub drvAddResource: Option<virLockDriverAddResource>,
    /// Per-object: register or take the resources.
    pub drvAcquire: Option<virLockDriverAcquire>,
    /// Per-object: drop the resources, optionally returning a state string.
    pub drvRelease: Option<virLockDriverRelease>,
    /// Per-object: report the state string.
    pub drvInquire: Option<virLockDriverInquire>,
}

/// The name libvirt looks up with `dlsym`.
pub const DRIVER_SYMBOL: &str = "virLockDriverImpl";

#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<virLockManagerParamValue>() == 16);
    assert!(size_of::<virLockManagerParam>() == 32);
    assert!(offset_of!(virLockManagerParam, key) == 8);
    assert!(offset_of!(virLockManagerParam, value) == 16);
    assert!(size_of::<virLockManager>() == 16);
    assert!(offset_of!(virLockManager, privateData) == 8);
    assert!(size_of::<virLockDriver>() == 72);
    assert!(offset_of!(virLockDriver, flags) == 4);
    assert!(offset_of!(virLockDriver, drvInit) == 8);
    assert!(offset_of!(virLockDriver, drvDeinit) == 16);
    assert!(offset_of!(virLockDriver, drvNew) == 24);
    assert!(offset_of!(virLockDriver, drvFree) == 32);
    assert!(offset_of!(virLockDriver, drvAddResource) == 40);
    assert!(offset_of!(virLockDriver, drvAcquire) == 48);
    assert!(offset_of!(virLockDriver, drvRelease) == 56);
    assert!(offset_of!(virLockDriver, drvInquire) == 64);
};

/// The callback slots in table order, for validators and error messages.
pub const CALLBACK_NAMES: [&str; 8] = [
    "drvInit",
    "drvDeinit",
    "drvNew",
    "drvFree",
    "drvAddResource",
    "drvAcquire",
    "drvRelease",
    "drvInquire",
];

impl virLockDriver {
    /// The names of the callback slots that are NULL.
    pub fn missing_callbacks(&self) -> Vec<&'static str> {
        let present = [
            self.drvInit.is_some(),
            self.drvDeinit.is_some(),
            self.drvNew.is_some(),
            self.drvFree.is_some(),
            self.drvAddResource.is_some(),
            self.drvAcquire.is_some(),
            self.drvRelease.is_some(),
            self.drvInquire.is_some(),
        ];
        CALLBACK_NAMES
            .iter()
            .zip(present)
            .filter(|(_, present)| !present)
            .map(|(name, _)| *name)
            .collect()
    }
}
