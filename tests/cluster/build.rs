//! `nemesis-worker` hosts dlm.so the way libvirtd does: export the framework's stand-in for
//! libvirt's `virReportErrorHelper`, which plugins look up with `dlsym(RTLD_DEFAULT, ..)`, so that
//! their errors (a refusal's code and message) reach the worker.
fn main() {
    println!(
        "cargo:rustc-link-arg-bin=nemesis-worker=-Wl,--export-dynamic-symbol=virReportErrorHelper"
    );
}
