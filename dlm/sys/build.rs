//! Generates the libdlm bindings with bindgen and links the light, non-threaded `libdlm_lt`.

use std::env;
use std::path::PathBuf;

const PACKAGES_HINT: &str = "install the Debian packages libdlm-dev (libdlm.h, libdlm_lt.so), \
                             libclang-dev (bindgen) and pkg-config";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");

    // The header comes from libdlm-dev; pkg-config finds its include path (and proves it is
    // installed). Its link flags are not used: Debian's libdlm_lt.pc is a copy of libdlm.pc
    // (`-ldlm -lpthread`, bogus libdir), so it can never select the light library.
    let library = match pkg_config::Config::new()
        .atleast_version("3")
        .cargo_metadata(false)
        .probe("libdlm")
    {
        Ok(library) => library,
        Err(err) => fail(&format!("pkg-config could not find libdlm: {err}")),
    };
    // libdlm_lt: synchronous `*_wait` calls that dispatch the completion themselves, no AST
    // thread (no dlm_ls_pthread_init hang), about 4x faster than the threaded library for a
    // locally mastered lock. lvmlockd links the same library.
    println!("cargo:rustc-link-lib=dlm_lt");
    for dir in &library.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("dlm_.*")
        .allowlist_type("dlm_.*")
        .allowlist_var("(DLM|LKF|LKM)_.*")
        // libdlm's own status codes (a successful unlock reports EUNLOCK in sb_status)
        .allowlist_var("E(CANCEL|UNLOCK|INPROG)")
        .rust_target(
            bindgen::RustTarget::stable(85, 0).unwrap_or_else(|err| fail(&err.to_string())),
        )
        .rust_edition(bindgen::RustEdition::Edition2024)
        .layout_tests(true)
        .parse_callbacks(Box::new(ConstantTypes))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &library.include_paths {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = match builder.generate() {
        Ok(bindings) => bindings,
        Err(err) => fail(&format!("bindgen could not process libdlm.h: {err}")),
    };
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
    if let Err(err) = bindings.write_to_file(&out) {
        fail(&format!("writing {}: {err}", out.display()));
    }
}

/// Gives each `#define` the type of the C value it is compared with: lock modes and `LKF_*` flags
/// are `uint32_t` arguments, the status codes are `int` (`sb_status`).
#[derive(Debug)]
struct ConstantTypes;

impl bindgen::callbacks::ParseCallbacks for ConstantTypes {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        use bindgen::callbacks::IntKind;
        match name {
            "ECANCEL" | "EUNLOCK" | "EINPROG" => Some(IntKind::Int),
            _ => Some(IntKind::UInt),
        }
    }
}

fn fail(reason: &str) -> ! {
    eprintln!("error: dlm-sys: {reason}");
    eprintln!("help: {PACKAGES_HINT}");
    panic!("dlm-sys: {reason}; {PACKAGES_HINT}");
}
