//! loader-test hosts plugins: export the framework's stand-in for libvirt's
//! `virReportErrorHelper` so plugins that look it up with `dlsym(RTLD_DEFAULT, ..)` report their
//! errors to us, as they would to libvirtd.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=virReportErrorHelper");
}
