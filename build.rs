//! Records what libjpeg-turbo was really built with, so `artpipe doctor` can tell the truth.
//!
//! libjpeg-turbo's SIMD code is assembly that needs nasm (or yasm) on x86; nasm is not on PyPI,
//! so a source build on a bare machine (Python + Rust, cmake from PyPI) compiles the C paths
//! instead. That build works and is correct, only slower, so it must not fail — but it must not
//! be silent either: this script reads the `jconfig.h` that libjpeg-turbo's CMake generated
//! (turbojpeg-sys exports its include directory as `DEP_TURBOJPEG_INCLUDE`), passes the facts
//! to the crate as compile-time environment variables, and prints one cargo warning when the
//! SIMD extensions are missing. Release wheels build with the `require-simd` feature, which makes
//! libjpeg-turbo's CMake fail instead.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TURBOJPEG_INCLUDE");

    let config = env::var_os("DEP_TURBOJPEG_INCLUDE")
        .and_then(|dirs| {
            env::split_paths(&dirs.to_string_lossy().replace(',', ":"))
                .map(|dir: PathBuf| dir.join("jconfig.h"))
                .find_map(|path| fs::read_to_string(path).ok())
        })
        .unwrap_or_default();

    let version = config
        .lines()
        .find_map(|line| define_value(line, "LIBJPEG_TURBO_VERSION"))
        .unwrap_or_else(|| "unknown".to_owned());
    let simd = config
        .lines()
        .any(|line| define_value(line, "WITH_SIMD").as_deref() == Some("1"));

    println!("cargo:rustc-env=ARTPIPE_JPEG_VERSION={version}");
    println!("cargo:rustc-env=ARTPIPE_JPEG_SIMD={}", u8::from(simd));

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !simd && matches!(arch.as_str(), "x86_64" | "x86" | "aarch64" | "arm") {
        println!(
            "cargo:warning=libjpeg-turbo was built WITHOUT its SIMD extensions (nasm/yasm not \
             found): JPEG decode and encode will be about 2x slower. artpipe works; for full \
             speed install nasm (e.g. `apt install nasm`, `brew install nasm`) and rebuild, or \
             install a release wheel. `artpipe doctor` shows what a build has."
        );
    }
}

/// `#define NAME VALUE` → `VALUE` without quotes; `None` for any other line.
fn define_value(line: &str, name: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    if words.next()? != "#define" || words.next()? != name {
        return None;
    }
    Some(words.next()?.trim_matches('"').to_owned())
}
