//! The whole chain for one image: sniff, limit check, decode (DCT-scaled), resize, orient,
//! encode or pass through, and for `save` the atomic write — all in one call, so the Python
//! side crosses into Rust (and releases the GIL) exactly once per art slot.
//!
//! Passthrough rule: when the source already is the target format, upright (orientation 1)
//! and within the box, its bytes are kept unchanged — no re-encode, no quality loss — but only
//! after they are proven to decode completely, so a truncated download is never saved.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::decode;
use crate::encode::{self, OutFormat};
use crate::error::CoreResult;
use crate::jpeg;
use crate::pixels::Pixels;
use crate::probe::{self, Format, Header};
use crate::resize;
use crate::scans;
use crate::write;
use crate::yuv;

/// Default pixel limit (100 MP), checked from the header before decoding.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// What the caller wants; plain values extracted from Python before the GIL is released.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub max_size: Option<(u32, u32)>,
    pub format: Option<OutFormat>,
    pub quality: u8,
    pub max_pixels: u64,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            max_size: None,
            format: None,
            quality: 90,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// An encoded (or passed-through) image.
#[derive(Debug)]
pub struct Rendered<'a> {
    pub bytes: Cow<'a, [u8]>,
    pub format: OutFormat,
    pub width: u32,
    pub height: u32,
    pub passthrough: bool,
}

/// A file written by `save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub path: PathBuf,
    pub format: OutFormat,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub sha256: String,
    pub passthrough: bool,
}

fn source_out_format(format: Format) -> Option<OutFormat> {
    match format {
        Format::Jpeg => Some(OutFormat::Jpeg),
        Format::Png => Some(OutFormat::Png),
        Format::Webp | Format::Gif => None,
    }
}

/// Target size in stored (un-oriented) axes: the box applies to the upright image.
fn stored_target(header: &Header, max_size: Option<(u32, u32)>) -> (u32, u32) {
    let (ow, oh) = header.oriented_size();
    let (tw, th) = resize::fit_within(ow, oh, max_size);
    if header.orientation >= 5 {
        (th, tw)
    } else {
        (tw, th)
    }
}

/// The header of an image we agree to decode: under the pixel limit and, for a JPEG, under
/// the scan limit (`scans.rs`), both checked before any pixel is allocated or decoded.
fn admitted_header(data: &[u8], max_pixels: u64) -> CoreResult<Header> {
    let header = probe::probe(data)?;
    header.check_limit(max_pixels)?;
    if header.format == Format::Jpeg {
        scans::check_scan_count(data, scans::MAX_SCANS)?;
    }
    Ok(header)
}

/// Decode, shrink to fit `max_size` and apply the orientation: upright pixels.
pub fn pixels(data: &[u8], max_size: Option<(u32, u32)>, max_pixels: u64) -> CoreResult<Pixels> {
    let header = admitted_header(data, max_pixels)?;
    upright_pixels(data, &header, max_size)
}

/// How `decode` will produce its pixels.
#[derive(Debug)]
pub enum DecodePlan {
    /// A JPEG that decodes at DCT scale 1/`denom` to exactly the wanted, upright RGB size:
    /// decode straight into the caller's buffer with `jpeg::decode_jpeg_rgb_into`.
    Direct { width: u32, height: u32, denom: u32 },
    /// Everything else: the finished pixels.
    Done(Pixels),
}

/// `pixels`, but leaves the common "JPEG, no resize beyond DCT scaling, upright" case to the
/// caller so the pixels can land directly in a Python buffer (one image-sized copy less).
pub fn plan_pixels(
    data: &[u8],
    max_size: Option<(u32, u32)>,
    max_pixels: u64,
) -> CoreResult<DecodePlan> {
    let header = admitted_header(data, max_pixels)?;
    if header.format == Format::Jpeg && header.orientation == 1 {
        let target = stored_target(&header, max_size);
        let denom = jpeg::jpeg_scale_denominator(header.width, header.height, target);
        if jpeg::jpeg_direct_size(data, denom)? == Some(target) {
            return Ok(DecodePlan::Direct {
                width: target.0,
                height: target.1,
                denom,
            });
        }
    }
    upright_pixels(data, &header, max_size).map(DecodePlan::Done)
}

fn upright_pixels(
    data: &[u8],
    header: &Header,
    max_size: Option<(u32, u32)>,
) -> CoreResult<Pixels> {
    let (tw, th) = stored_target(header, max_size);
    let decoded = decode::decode(data, header, Some((tw, th)))?;
    // A GIF frame or WebP canvas can differ from the header; fit what was really decoded.
    let (tw, th) = if (decoded.width, decoded.height) == (header.width, header.height)
        || header.format == Format::Jpeg
    {
        (tw, th)
    } else {
        let probe_like = Header {
            width: decoded.width,
            height: decoded.height,
            ..*header
        };
        stored_target(&probe_like, max_size)
    };
    let resized = resize::resize(decoded, tw, th)?;
    Ok(resize::orient(resized, header.orientation))
}

/// Render `data` per `req`: encoded bytes, or the original bytes when passthrough applies.
pub fn render<'a>(data: &'a [u8], req: &Request) -> CoreResult<Rendered<'a>> {
    let header = admitted_header(data, req.max_pixels)?;
    let source = source_out_format(header.format);
    let wanted = req.format.or(source);
    if wanted.is_some()
        && wanted == source
        && header.orientation == 1
        && stored_target(&header, req.max_size) == (header.width, header.height)
    {
        decode::validate(data, &header)?;
        if let Some(format) = wanted {
            return Ok(Rendered {
                bytes: Cow::Borrowed(data),
                format,
                width: header.width,
                height: header.height,
                passthrough: true,
            });
        }
    }
    if wanted == Some(OutFormat::Jpeg) && header.format == Format::Jpeg && header.orientation == 1 {
        let (width, height) = stored_target(&header, req.max_size);
        if let Some(bytes) = yuv::render_jpeg(data, (width, height), req.quality)? {
            return Ok(Rendered {
                bytes: Cow::Owned(bytes),
                format: OutFormat::Jpeg,
                width,
                height,
                passthrough: false,
            });
        }
    }
    let pixels = upright_pixels(data, &header, req.max_size)?;
    let format = wanted.unwrap_or(if pixels.has_alpha() {
        OutFormat::Png
    } else {
        OutFormat::Jpeg
    });
    let bytes = encode::encode(&pixels, format, req.quality)?;
    Ok(Rendered {
        bytes: Cow::Owned(bytes),
        format,
        width: pixels.width,
        height: pixels.height,
        passthrough: false,
    })
}

/// Render and write atomically to the target; the hash is of exactly the bytes written.
pub fn save(data: &[u8], target: &write::Target<'_>, req: &Request) -> CoreResult<Saved> {
    // Fail fast on a bad target before spending CPU on the image.
    write::check_target(target)?;
    let rendered = render(data, req)?;
    write::write_atomic(target, &rendered.bytes)?;
    Ok(saved(&rendered, target.path))
}

/// Render and stage the result beside the target: `write::commit` puts it in place, durably,
/// together with other staged files (one sync pass for many files).
pub fn save_staged(
    data: &[u8],
    target: &write::Target<'_>,
    req: &Request,
) -> CoreResult<(Saved, write::Staged)> {
    write::check_target(target)?;
    let rendered = render(data, req)?;
    let staged = write::stage(target, &rendered.bytes)?;
    Ok((saved(&rendered, target.path), staged))
}

fn saved(rendered: &Rendered<'_>, path: &Path) -> Saved {
    let digest = Sha256::digest(&rendered.bytes);
    let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Saved {
        path: path.to_path_buf(),
        format: rendered.format,
        width: rendered.width,
        height: rendered.height,
        bytes: rendered.bytes.len() as u64,
        sha256,
        passthrough: rendered.passthrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let data = (0..width * height)
            .flat_map(|i| [(i % 200) as u8, (i / width % 200) as u8, 90])
            .collect();
        let px = Pixels {
            width,
            height,
            channels: 3,
            data,
        };
        encode::encode(&px, OutFormat::Jpeg, 90).unwrap()
    }

    #[test]
    fn small_jpeg_passes_through_unchanged() {
        let src = jpeg(64, 32);
        let out = render(&src, &Request::default()).unwrap();
        assert!(out.passthrough);
        assert_eq!(out.bytes.as_ref(), src.as_slice());
    }

    #[test]
    fn big_jpeg_is_shrunk_into_the_box() {
        let src = jpeg(400, 200);
        let req = Request {
            max_size: Some((100, 100)),
            ..Request::default()
        };
        let out = render(&src, &req).unwrap();
        assert!(!out.passthrough);
        assert_eq!((out.width, out.height), (100, 50));
        let h = probe::probe(&out.bytes).unwrap();
        assert_eq!((h.width, h.height), (100, 50));
    }

    #[test]
    fn format_change_forces_reencode() {
        let src = jpeg(20, 10);
        let req = Request {
            format: Some(OutFormat::Png),
            ..Request::default()
        };
        let out = render(&src, &req).unwrap();
        assert_eq!(out.format, OutFormat::Png);
        assert!(!out.passthrough);
    }

    #[test]
    fn limit_is_checked_before_decoding() {
        let src = jpeg(100, 100);
        let req = Request {
            max_pixels: 9_999,
            ..Request::default()
        };
        assert!(matches!(
            render(&src, &req),
            Err(crate::error::CoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn exact_dct_scale_is_decoded_in_place_with_the_same_pixels() {
        let src = jpeg(400, 200);
        let plan = plan_pixels(&src, Some((200, 100)), DEFAULT_MAX_PIXELS).unwrap();
        assert!(matches!(
            plan,
            DecodePlan::Direct {
                width: 200,
                height: 100,
                denom: 2
            }
        ));
        let mut buf = vec![0u8; 200 * 100 * 3];
        jpeg::decode_jpeg_rgb_into(&src, 2, &mut buf).unwrap();
        let expected = pixels(&src, Some((200, 100)), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(buf, expected.data);
        match plan_pixels(&src, Some((150, 150)), DEFAULT_MAX_PIXELS).unwrap() {
            DecodePlan::Done(px) => assert_eq!((px.width, px.height), (150, 75)),
            other => panic!("expected a resize, got {other:?}"),
        }
    }

    #[test]
    fn save_hashes_the_bytes_on_disk() {
        let dir = std::env::temp_dir().join(format!("artpipe-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("thumb.jpg");
        let src = jpeg(30, 30);
        let saved = save(&src, &write::Target::path(&path), &Request::default()).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        let expect: String = Sha256::digest(&on_disk)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(saved.sha256, expect);
        assert_eq!(saved.bytes, on_disk.len() as u64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
