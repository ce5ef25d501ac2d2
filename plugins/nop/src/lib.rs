//! `nop.so`: accepts everything and locks nothing, like libvirt's built-in `nop` driver.
//!
//! libvirt never loads a file called `nop.so` (the name selects its built-in driver), so this
//! plugin exists for loader-test: it is the floor every benchmark and scenario is compared to.
#![forbid(unsafe_code)]

mod driver;

pub use driver::NopDriver;

lockmgr::export_lock_driver!(NopDriver);
