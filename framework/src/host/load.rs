//! Loading a plugin as `lock_manager.c` does: `access(R_OK)`, `dlopen(RTLD_NOW | RTLD_LOCAL)`,
//! `dlsym("virLockDriverImpl")`, libvirt's refcounted `drvInit` / `drvDeinit`.

use std::ffi::{CString, c_int, c_void};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::abi::{self, virLockDriver, virLockManager};
use crate::host::capture;
use crate::host::error::{HostError, HostResult};
use crate::host::manager::{Manager, OwnedParams, RawParam};
use crate::types::{Domain, NewFlags};

/// Where Debian's libvirt looks for plugins when `LIBVIRT_LOCK_MANAGER_PLUGIN_DIR` is unset.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver";

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

// SAFETY: libvirtd calls one loaded lock driver from many worker threads at once (it starts
// domains concurrently, and its lock manager layer adds no lock around the driver's callbacks),
// so a driver libvirt can load must allow it. The library handle and the driver table do not
// change after loading, and what does change (`refs`, through `init`/`deinit`) needs `&mut self`.
#[allow(unsafe_code)]
unsafe impl Send for Plugin {}
// SAFETY: as for `Send`: shared read-only, as libvirtd shares its driver.
#[allow(unsafe_code)]
unsafe impl Sync for Plugin {}

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

#[allow(unsafe_code)]
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
    #[allow(unsafe_code)]
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

    #[allow(unsafe_code)]
    pub(super) fn table(&self) -> &virLockDriver {
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
    #[allow(unsafe_code)]
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
    #[allow(unsafe_code)]
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
    #[allow(unsafe_code)]
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

pub(super) fn check(slot: &'static str, rc: c_int) -> HostResult<()> {
    if rc < 0 {
        return Err(HostError::Callback {
            slot,
            reported: capture::take(),
        });
    }
    Ok(())
}
