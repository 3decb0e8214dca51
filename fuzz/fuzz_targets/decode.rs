//! Fuzz the decode path that every downloaded body goes through: sniff and header probe,
//! the pixel-limit check, decode (JPEG via libjpeg-turbo with DCT scaling; PNG, WebP, GIF via
//! `image`), resize, orientation, encode or validated passthrough. Any input must give `Ok`
//! or a `CoreError` — a panic (which the Python boundary would turn into InternalError), an
//! abort, a hang or an out-of-memory is a bug.
//!
//! The first input byte picks the request (box size, output format), the rest is the body.
//! The pixel limit is kept at 4 MP so a mutated header cannot make libFuzzer's 2 GB RSS
//! limit fire on a legitimate (bounded) allocation; the 100 MP default is the same code path.
#![no_main]

use artpipe_core::decode;
use artpipe_core::encode::OutFormat;
use artpipe_core::render::{self, Request};
use libfuzzer_sys::fuzz_target;

const MAX_PIXELS: u64 = 4_000_000;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let boxes = [None, Some((64, 64)), Some((1000, 1500)), Some((1, 1))];
    let max_size = boxes[usize::from(selector & 3)];
    let format = match (selector >> 2) & 3 {
        1 => Some(OutFormat::Jpeg),
        2 => Some(OutFormat::Png),
        _ => None,
    };

    let Ok(header) = decode::probe(data) else {
        return;
    };
    if header.check_limit(MAX_PIXELS).is_err() {
        return;
    }
    let _ = render::pixels(data, max_size, MAX_PIXELS);
    let _ = render::plan_pixels(data, max_size, MAX_PIXELS);
    let req = Request {
        max_size,
        format,
        quality: 1 + (selector >> 4) * 6,
        max_pixels: MAX_PIXELS,
    };
    if let Ok(out) = render::render(data, &req) {
        // What render returns must itself be an image the core reads back.
        assert!(
            decode::probe(&out.bytes).is_ok(),
            "render produced an unreadable image"
        );
    }
});
