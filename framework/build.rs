//! With feature `host`, compiles the C stand-in for libvirt's `virReportErrorHelper` that host
//! binaries export so plugin errors can be captured.
fn main() {
    println!("cargo:rerun-if-changed=csrc/error_capture.c");
    if std::env::var_os("CARGO_FEATURE_HOST").is_some() {
        cc::Build::new()
            .file("csrc/error_capture.c")
            .warnings(true)
            .compile("lockmgr_error_capture");
        // The framework's own tests host a plugin in-process and must export the stand-in too.
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=virReportErrorHelper");
    }
}
