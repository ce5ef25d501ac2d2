//! Generates the votequorum and cpg bindings with bindgen and links libvotequorum and libcpg.

use std::env;
use std::path::PathBuf;

const PACKAGES_HINT: &str = "install the Debian packages libvotequorum-dev (corosync/votequorum.h), \
                             libcpg-dev (corosync/cpg.h), libclang-dev (bindgen) and pkg-config";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");

    let mut include_paths = Vec::new();
    for name in ["libvotequorum", "libcpg"] {
        match pkg_config::Config::new().atleast_version("3").probe(name) {
            Ok(library) => include_paths.extend(library.include_paths),
            Err(err) => fail(&format!("pkg-config could not find {name}: {err}")),
        }
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function(
            "votequorum_(initialize|finalize|dispatch|fd_get|getinfo|trackstart|trackstop)",
        )
        .allowlist_function(
            "cpg_(initialize|finalize|fd_get|dispatch|join|leave|mcast_joined|membership_get|local_get|context_get|context_set)",
        )
        .allowlist_type("votequorum_.*|cpg_.*|cs_error_t|cs_dispatch_flags_t")
        .allowlist_var("VOTEQUORUM_INFO_.*|VOTEQUORUM_NODESTATE_.*|CS_TRACK_.*|CPG_.*")
        .rust_target(
            bindgen::RustTarget::stable(85, 0).unwrap_or_else(|err| fail(&err.to_string())),
        )
        .rust_edition(bindgen::RustEdition::Edition2024)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &include_paths {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = match builder.generate() {
        Ok(bindings) => bindings,
        Err(err) => fail(&format!(
            "bindgen could not process corosync/votequorum.h and cpg.h: {err}"
        )),
    };
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
    if let Err(err) = bindings.write_to_file(&out) {
        fail(&format!("writing {}: {err}", out.display()));
    }
}

fn fail(reason: &str) -> ! {
    eprintln!("error: corosync-sys: {reason}");
    eprintln!("help: {PACKAGES_HINT}");
    panic!("corosync-sys: {reason}; {PACKAGES_HINT}");
}
