//! Makes the command lines of `lockmgrd` and `lockmgr` available to the man page generator
//! without moving them: each binary's source file is copied into `OUT_DIR` verbatim except for its
//! inner attributes and inner doc comments (`#![...]`, `//!`), which `include!` does not accept,
//! and compiled again inside a module of this crate (src/main.rs). So the man pages are built from
//! the very `struct Cli` the binaries parse with, and cannot drift from `--help`.

use std::path::Path;

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for (source, copy) in [
        ("../daemon/src/main.rs", "lockmgrd_main.rs"),
        ("../daemon/src/bin/lockmgr.rs", "lockmgr_main.rs"),
    ] {
        println!("cargo:rerun-if-changed={source}");
        let text = std::fs::read_to_string(source)
            .unwrap_or_else(|error| panic!("cannot read {source}: {error}"));
        // A `mod name;` would be looked for next to the copy, in OUT_DIR: say so plainly.
        if let Some(line) = text.lines().find(|line| {
            let line = line.trim_start().trim_start_matches("pub ");
            line.starts_with("mod ") && line.trim_end().ends_with(';')
        }) {
            panic!(
                "{source} declares a module in a file of its own ({line:?}); the man page \
                 generator compiles {source} elsewhere and cannot follow it: declare the module \
                 in the lockmgrd library instead, or teach xtask/build.rs to copy it"
            );
        }
        let items: String = text
            .lines()
            .filter(|line| {
                let line = line.trim_start();
                !line.starts_with("#![") && !line.starts_with("//!")
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        std::fs::write(Path::new(&out_dir).join(copy), items)
            .unwrap_or_else(|error| panic!("cannot write {copy}: {error}"));
    }
}
