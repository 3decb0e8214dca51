//! Sniff and probe: the format from magic bytes, the size and EXIF orientation from the header.
//!
//! Nothing here decodes pixels. The format comes from magic bytes only (never a file name or
//! Content-Type): an HTML error page named `.jpg` is refused here with a message that says
//! what it is. The size comes from the header so that the caller can check the pixel count
//! against its limit BEFORE any pixel buffer is allocated: without that, a 200-byte PNG
//! declaring 100000x100000 would make us try to allocate 40 GB.

use crate::error::{CoreError, CoreResult};

/// Image formats the core reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl Format {
    /// Lower-case name used in the Python API ("jpeg", "png", ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
        }
    }

    /// Upper-case name used in messages.
    pub fn label(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
            Format::Gif => "GIF",
        }
    }
}

/// What the header says, without decoding pixels. Width and height are as stored (before
/// the EXIF orientation is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// EXIF orientation 1..=8 (1 when absent or unreadable).
    pub orientation: u8,
}

impl Header {
    /// Width and height after the EXIF orientation is applied (5..8 swap the axes).
    pub fn oriented_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// Refuse images whose header declares more than `limit` pixels.
    pub fn check_limit(&self, limit: u64) -> CoreResult<()> {
        let pixels = u64::from(self.width) * u64::from(self.height);
        if pixels > limit {
            return Err(CoreError::TooLarge {
                format: self.format.label(),
                width: self.width,
                height: self.height,
                pixels,
                limit,
            });
        }
        Ok(())
    }
}

/// Describe the first bytes of a body for a message: printable ASCII quoted, else hex.
fn describe_start(data: &[u8]) -> String {
    let head = data.get(..16).unwrap_or(data);
    if head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
    {
        format!("\"{}\"", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// Identify the format from magic bytes only.
pub fn sniff(data: &[u8]) -> CoreResult<Format> {
    if data.is_empty() {
        return Err(CoreError::decode(
            "image",
            "the body is empty (0 bytes); the download probably failed",
        ));
    }
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if data.len() >= 12 && data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP") {
        return Ok(Format::Webp);
    }
    if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        return Ok(Format::Gif);
    }
    // Too short to tell: a prefix of a known signature is a truncated image, not "unknown".
    let prefixes: [(&[u8], &'static str); 5] = [
        (b"\xFF\xD8\xFF", "JPEG"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"RIFF", "WebP"),
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
    ];
    for (magic, label) in prefixes {
        if data.len() < magic.len() && magic.starts_with(data) {
            return Err(CoreError::decode(
                label,
                format!("only {} bytes; the file is truncated", data.len()),
            ));
        }
    }
    Err(CoreError::Unsupported {
        reason: unsupported_reason(data),
    })
}

fn unsupported_reason(data: &[u8]) -> String {
    let start = describe_start(data);
    let trimmed: Vec<u8> = data
        .iter()
        .skip_while(|b| b.is_ascii_whitespace() || **b == 0xEF || **b == 0xBB || **b == 0xBF)
        .take(64)
        .map(u8::to_ascii_lowercase)
        .collect();
    let known: Option<&str> = if trimmed.starts_with(b"<!doctype html")
        || trimmed.starts_with(b"<html")
        || trimmed.starts_with(b"<head")
        || trimmed.starts_with(b"<body")
    {
        Some("an HTML page: an error page, not an image")
    } else if trimmed.starts_with(b"<svg") || trimmed.starts_with(b"<?xml") {
        Some("SVG/XML: a text document, which artpipe does not rasterise")
    } else if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
        Some("JSON text: an API error, not an image")
    } else if data.starts_with(b"BM") {
        Some("a BMP image, which artpipe does not read")
    } else if data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") {
        Some("a TIFF image, which artpipe does not read")
    } else if data.get(4..8) == Some(b"ftyp") {
        Some("an ISO-BMFF file (AVIF, HEIC or MP4), which artpipe does not read")
    } else if data.starts_with(&[0xFF, 0x0A]) || data.starts_with(b"\0\0\0\x0cJXL ") {
        Some("a JPEG XL image, which artpipe does not read")
    } else if data.starts_with(&[0, 0, 1, 0]) {
        Some("an ICO icon, which artpipe does not read")
    } else {
        None
    };
    match known {
        Some(what) => format!("not a supported image: body starts with {start} ({what})"),
        None => format!(
            "not a supported image: body starts with {start}, which is no JPEG, PNG, WebP or GIF \
             signature ({} bytes)",
            data.len()
        ),
    }
}

/// Read format, size and orientation from the header only.
pub fn probe(data: &[u8]) -> CoreResult<Header> {
    let format = sniff(data)?;
    let (width, height, exif) = match format {
        Format::Jpeg => probe_jpeg(data)?,
        Format::Png => probe_png(data)?,
        Format::Webp => probe_webp(data)?,
        Format::Gif => probe_gif(data)?,
    };
    if width == 0 || height == 0 {
        return Err(CoreError::decode(
            format.label(),
            format!("the header declares an empty image ({width}x{height})"),
        ));
    }
    let orientation = exif.map_or(1, orientation_from_exif);
    Ok(Header {
        format,
        width,
        height,
        orientation,
    })
}

fn be16(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u32::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn le16(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u32::from(u16::from_le_bytes([*b.first()?, *b.get(1)?])))
}

fn le24(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(3)?)?;
    Some(u32::from(*b.first()?) | u32::from(*b.get(1)?) << 8 | u32::from(*b.get(2)?) << 16)
}

fn le32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

type Probed<'a> = (u32, u32, Option<&'a [u8]>);

/// Walk JPEG markers up to the frame header (SOFn), picking up an EXIF APP1 on the way.
fn probe_jpeg(data: &[u8]) -> CoreResult<Probed<'_>> {
    let truncated = || {
        CoreError::decode(
            "JPEG",
            "the file ends inside its header, before the frame size (SOF); it is truncated",
        )
    };
    let mut pos = 2usize;
    let mut exif: Option<&[u8]> = None;
    loop {
        // Markers are 0xFF followed by a non-0xFF code; extra 0xFF bytes are fill.
        if *data.get(pos).ok_or_else(truncated)? != 0xFF {
            return Err(CoreError::decode(
                "JPEG",
                format!("corrupt header: expected a marker at byte {pos}"),
            ));
        }
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *data.get(pos).ok_or_else(truncated)?;
        pos += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => {
                return Err(CoreError::decode(
                    "JPEG",
                    "corrupt header: image data starts before the frame size (SOF)",
                ))
            }
            _ => {}
        }
        let len = be16(data, pos).ok_or_else(truncated)? as usize;
        if len < 2 {
            return Err(CoreError::decode(
                "JPEG",
                format!("corrupt header: segment length {len} at byte {pos}"),
            ));
        }
        let body = data.get(pos + 2..pos + len).ok_or_else(truncated)?;
        match marker {
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                let height = be16(body, 1).ok_or_else(truncated)?;
                let width = be16(body, 3).ok_or_else(truncated)?;
                return Ok((width, height, exif));
            }
            0xE1 if exif.is_none() && body.starts_with(b"Exif\0\0") => {
                exif = body.get(6..);
            }
            _ => {}
        }
        pos += len;
    }
}

/// Read IHDR, then walk chunks up to the first IDAT for an eXIf chunk.
fn probe_png(data: &[u8]) -> CoreResult<Probed<'_>> {
    let truncated = || CoreError::decode("PNG", "the file ends inside its header; it is truncated");
    if data.get(12..16).ok_or_else(truncated)? != b"IHDR" {
        return Err(CoreError::decode(
            "PNG",
            "corrupt header: the first chunk is not IHDR",
        ));
    }
    let width = be32(data, 16).ok_or_else(truncated)?;
    let height = be32(data, 20).ok_or_else(truncated)?;
    if data.len() < 33 {
        return Err(truncated());
    }
    let mut exif = None;
    let mut pos = 33usize;
    while let (Some(len), Some(kind)) = (be32(data, pos), data.get(pos + 4..pos + 8)) {
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        let start = pos + 8;
        let end = start.saturating_add(len as usize);
        if kind == b"eXIf" {
            exif = data.get(start..end);
            break;
        }
        pos = end.saturating_add(4);
    }
    Ok((width, height, exif))
}

/// Read the first chunk (VP8, VP8L or VP8X), and for VP8X find the EXIF chunk.
fn probe_webp(data: &[u8]) -> CoreResult<Probed<'_>> {
    let truncated =
        || CoreError::decode("WebP", "the file ends inside its header; it is truncated");
    let kind = data.get(12..16).ok_or_else(truncated)?;
    let body = 20usize;
    match kind {
        b"VP8 " => {
            if data.get(body + 3..body + 6).ok_or_else(truncated)? != [0x9d, 0x01, 0x2a] {
                return Err(CoreError::decode(
                    "WebP",
                    "corrupt header: missing the VP8 start code",
                ));
            }
            let width = le16(data, body + 6).ok_or_else(truncated)? & 0x3fff;
            let height = le16(data, body + 8).ok_or_else(truncated)? & 0x3fff;
            Ok((width, height, None))
        }
        b"VP8L" => {
            if data.get(body) != Some(&0x2f) {
                return Err(CoreError::decode(
                    "WebP",
                    "corrupt header: missing the VP8L signature",
                ));
            }
            let bits = le32(data, body + 1).ok_or_else(truncated)?;
            Ok(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1, None))
        }
        b"VP8X" => {
            let flags = *data.get(body).ok_or_else(truncated)?;
            let width = le24(data, body + 4).ok_or_else(truncated)? + 1;
            let height = le24(data, body + 7).ok_or_else(truncated)? + 1;
            let mut exif = None;
            if flags & 0x08 != 0 {
                let mut pos = 12usize;
                while let (Some(k), Some(len)) = (data.get(pos..pos + 4), le32(data, pos + 4)) {
                    let start = pos + 8;
                    let end = start.saturating_add(len as usize);
                    if k == b"EXIF" {
                        exif = data
                            .get(start..end)
                            .map(|e| e.strip_prefix(b"Exif\0\0").unwrap_or(e));
                        break;
                    }
                    pos = end.saturating_add(len as usize & 1);
                }
            }
            Ok((width, height, exif))
        }
        other => Err(CoreError::decode(
            "WebP",
            format!(
                "unknown first chunk {:?}; expected VP8, VP8L or VP8X",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

fn probe_gif(data: &[u8]) -> CoreResult<Probed<'_>> {
    let truncated = || CoreError::decode("GIF", "the file ends inside its header; it is truncated");
    let width = le16(data, 6).ok_or_else(truncated)?;
    let height = le16(data, 8).ok_or_else(truncated)?;
    Ok((width, height, None))
}

/// EXIF orientation from a TIFF-structured EXIF block; 1 when absent, invalid or out of range.
/// A broken EXIF block must not make a good image fail, so errors here are ignored.
fn orientation_from_exif(tiff: &[u8]) -> u8 {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|v| u8::try_from(v).ok())
        .filter(|v| (1..=8).contains(v))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_images::{jpeg_bytes, png_bytes};

    #[test]
    fn empty_body_is_a_decode_error_that_says_empty() {
        let err = sniff(b"").unwrap_err();
        assert!(matches!(err, CoreError::Decode { .. }));
        assert!(err.to_string().contains("empty"));
    }

    #[test]
    fn html_is_unsupported_and_named_as_an_error_page() {
        let err = sniff(b"<!DOCTYPE html><html><body>404</body></html>").unwrap_err();
        assert!(matches!(err, CoreError::Unsupported { .. }));
        let text = err.to_string();
        assert!(text.contains("\"<!DOCTYPE html"), "{text}");
        assert!(text.contains("error page"), "{text}");
    }

    #[test]
    fn random_bytes_are_unsupported_with_their_hex_start() {
        let err = sniff(&[0x00, 0x13, 0x37, 0x99, 0x01]).unwrap_err();
        assert!(err.to_string().contains("00 13 37 99"), "{err}");
    }

    #[test]
    fn a_prefix_of_a_signature_is_truncated_not_unknown() {
        let err = sniff(b"\x89PN").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn probe_reads_jpeg_size_without_decoding() {
        let data = jpeg_bytes(37, 21);
        let h = probe(&data).unwrap();
        assert_eq!(
            (h.format, h.width, h.height, h.orientation),
            (Format::Jpeg, 37, 21, 1)
        );
    }

    #[test]
    fn probe_reads_png_size() {
        let data = png_bytes(5, 9, true);
        let h = probe(&data).unwrap();
        assert_eq!((h.format, h.width, h.height), (Format::Png, 5, 9));
    }

    #[test]
    fn tiny_png_declaring_huge_size_is_refused_by_the_limit() {
        let mut data = png_bytes(1, 1, false);
        data[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        data[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let h = probe(&data).unwrap();
        let err = h.check_limit(100_000_000).unwrap_err();
        assert!(matches!(err, CoreError::TooLarge { .. }));
    }

    #[test]
    fn exif_orientation_is_read_from_a_tiff_block() {
        // Little-endian TIFF with one IFD entry: Orientation (0x0112) SHORT = 6.
        let tiff: Vec<u8> = vec![
            b'I', b'I', 42, 0, 8, 0, 0, 0, // header, IFD at 8
            1, 0, // one entry
            0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, // orientation = 6
            0, 0, 0, 0, // no next IFD
        ];
        assert_eq!(orientation_from_exif(&tiff), 6);
        assert_eq!(orientation_from_exif(b"garbage"), 1);
    }
}
