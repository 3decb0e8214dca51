//! What this build of the image core contains and what it uses on this CPU — the facts a user
//! pastes into a bug report (`artpipe doctor`). Build facts come from build.rs, which read them
//! from libjpeg-turbo's own generated `jconfig.h`, so they cannot drift from the linked library.
//! Run-time facts use the same CPU detection the libraries themselves use.

use crate::render::DEFAULT_MAX_PIXELS;

/// One line per fact, as (name, value) pairs in a stable order.
pub fn facts() -> Vec<(&'static str, String)> {
    vec![
        ("core_version", env!("CARGO_PKG_VERSION").to_owned()),
        ("target", target()),
        ("libjpeg_turbo", env!("ARTPIPE_JPEG_VERSION").to_owned()),
        ("jpeg_simd_built", jpeg_simd_built().to_string()),
        ("jpeg_simd", jpeg_simd_in_use().to_owned()),
        ("resize_cpu", resize_cpu().to_owned()),
        ("formats", "jpeg,png,webp,gif".to_owned()),
        ("max_pixels", DEFAULT_MAX_PIXELS.to_string()),
    ]
}

fn target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Whether libjpeg-turbo was compiled with its SIMD extensions (build.rs read `WITH_SIMD`).
pub fn jpeg_simd_built() -> bool {
    env!("ARTPIPE_JPEG_SIMD") == "1"
}

/// The SIMD level libjpeg-turbo picks at run time: it dispatches on CPUID (AVX2, else SSE2 on
/// x86-64; NEON on Arm) and honours `JSIMD_FORCENONE=1`, exactly as mirrored here.
pub fn jpeg_simd_in_use() -> &'static str {
    if !jpeg_simd_built() {
        return "off (built without SIMD)";
    }
    if std::env::var("JSIMD_FORCENONE").is_ok_and(|value| value == "1") {
        return "off (JSIMD_FORCENONE=1)";
    }
    cpu_level()
}

#[cfg(target_arch = "x86_64")]
fn cpu_level() -> &'static str {
    if std::arch::is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "sse2"
    }
}

#[cfg(target_arch = "aarch64")]
fn cpu_level() -> &'static str {
    "neon"
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_level() -> &'static str {
    "on"
}

/// The extension fast_image_resize chooses by default (its own CPU detection).
pub fn resize_cpu() -> &'static str {
    use fast_image_resize::CpuExtensions;
    match CpuExtensions::default() {
        CpuExtensions::None => "none",
        #[cfg(target_arch = "x86_64")]
        CpuExtensions::Sse4_1 => "sse4.1",
        #[cfg(target_arch = "x86_64")]
        CpuExtensions::Avx2 => "avx2",
        #[cfg(target_arch = "aarch64")]
        CpuExtensions::Neon => "neon",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_name_the_linked_libjpeg_turbo() {
        let facts = facts();
        let version = &facts
            .iter()
            .find(|(name, _)| *name == "libjpeg_turbo")
            .unwrap()
            .1;
        assert!(version.starts_with(char::is_numeric), "{version}");
    }

    #[test]
    fn simd_in_use_agrees_with_the_build() {
        assert_eq!(jpeg_simd_built(), !jpeg_simd_in_use().starts_with("off"));
    }
}
