//! loader-test hosts plugins: export the framework's stand-in for libvirt's
//! `virReportErrorHelper` so plugins that look it up with `dlsym(RTLD_DEFAULT, ..)` report their
//! errors to us, as they would to libvirtd. Its tests host plugins in-process too.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=virReportErrorHelper");
    println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=virReportErrorHelper");
}
