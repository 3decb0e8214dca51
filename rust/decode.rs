//! Decode: bytes whose header was probed (`probe`) in, RGB/RGBA `Pixels` out.
//!
//! JPEG goes through libjpeg-turbo (`jpeg`), at the DCT scale that still covers the target
//! size; PNG, WebP and GIF through the `image` crate, with an allocation cap derived from
//! the header so a frame larger than its declared canvas cannot grow memory. Call
//! `Header::check_limit` first. Every failure is a `CoreError` whose message says what was
//! wrong with the bytes.

use std::io::Cursor;

use crate::error::{CoreError, CoreResult};
use crate::jpeg::{decode_jpeg, jpeg_scale_denominator};
use crate::pixels::Pixels;
use crate::probe::{Format, Header};

/// Decode to RGB/RGBA. `target` (in stored orientation) lets JPEG decode at a DCT scale that
/// still covers it; other formats decode at full size. Call `Header::check_limit` first.
pub fn decode(data: &[u8], header: &Header, target: Option<(u32, u32)>) -> CoreResult<Pixels> {
    match header.format {
        Format::Jpeg => {
            let denom = target.map_or(1, |t| {
                jpeg_scale_denominator(header.width, header.height, t)
            });
            decode_jpeg(data, denom)
        }
        Format::Png | Format::Webp | Format::Gif => decode_other(data, header),
    }
}

/// Check that the bytes decode completely, as cheaply as possible: JPEG at 1/8 DCT scale
/// still Huffman-decodes every block, so truncation and corrupt entropy data are caught.
pub fn validate(data: &[u8], header: &Header) -> CoreResult<()> {
    match header.format {
        Format::Jpeg => decode_jpeg(data, 8).map(drop),
        _ => decode_other(data, header).map(drop),
    }
}

fn image_error(format: Format, err: &image::ImageError) -> CoreError {
    use image::ImageError;
    match err {
        ImageError::Limits(e) => CoreError::decode(
            format.label(),
            format!("the image needs more memory than allowed ({e})"),
        ),
        ImageError::Unsupported(e) => CoreError::Unsupported {
            reason: format!("unsupported {} variant: {e}", format.label()),
        },
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            CoreError::decode(
                format.label(),
                "the data ends before the image is complete; the file is truncated",
            )
        }
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            if lower.contains("eof") || lower.contains("end of") || lower.contains("truncat") {
                CoreError::decode(
                    format.label(),
                    format!("the data ends before the image is complete; the file is truncated ({text})"),
                )
            } else {
                CoreError::decode(format.label(), format!("corrupt data ({text})"))
            }
        }
    }
}

fn decode_other(data: &[u8], header: &Header) -> CoreResult<Pixels> {
    use image::codecs::{gif::GifDecoder, png::PngDecoder, webp::WebPDecoder};
    use image::{DynamicImage, ImageDecoder, Limits};

    let format = header.format;
    let err = |e: image::ImageError| image_error(format, &e);
    let mut limits = Limits::default();
    // The header check already capped the pixel count; this also caps what a decoder may
    // allocate internally (a GIF frame or a WebP chunk larger than the declared canvas).
    let pixels = u64::from(header.width) * u64::from(header.height);
    limits.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    let cursor = Cursor::new(data);
    let image = match format {
        Format::Png => {
            let decoder = PngDecoder::with_limits(cursor, limits).map_err(err)?;
            DynamicImage::from_decoder(decoder).map_err(err)?
        }
        Format::Webp => {
            let mut decoder = WebPDecoder::new(cursor).map_err(err)?;
            decoder.set_limits(limits).map_err(err)?;
            DynamicImage::from_decoder(decoder).map_err(err)?
        }
        Format::Gif => {
            let mut decoder = GifDecoder::new(cursor).map_err(err)?;
            decoder.set_limits(limits).map_err(err)?;
            DynamicImage::from_decoder(decoder).map_err(err)?
        }
        Format::Jpeg => return decode_jpeg(data, 1),
    };
    let (width, height) = (image.width(), image.height());
    let (channels, data) = if image.color().has_alpha() {
        (4, image.into_rgba8().into_raw())
    } else {
        (3, image.into_rgb8().into_raw())
    };
    Ok(Pixels {
        width,
        height,
        channels,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::probe;
    use crate::test_images::{jpeg_bytes, png_bytes};

    #[test]
    fn jpeg_decodes_at_dct_scale_covering_the_target() {
        let data = jpeg_bytes(400, 300);
        let h = probe(&data).unwrap();
        assert_eq!(jpeg_scale_denominator(400, 300, (100, 75)), 4);
        assert_eq!(jpeg_scale_denominator(400, 300, (201, 150)), 1);
        let px = decode(&data, &h, Some((100, 75))).unwrap();
        assert_eq!((px.width, px.height, px.channels), (100, 75, 3));
        assert_eq!(px.data.len(), 100 * 75 * 3);
    }

    #[test]
    fn truncated_jpeg_fails_even_at_one_eighth_scale() {
        let data = jpeg_bytes(256, 256);
        let cut = &data[..data.len() / 2];
        let h = probe(cut).unwrap();
        let err = validate(cut, &h).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn truncated_png_fails() {
        let data = png_bytes(64, 64, false);
        let cut = &data[..data.len() - 20];
        let h = probe(cut).unwrap();
        assert!(decode(cut, &h, None).is_err());
    }

    #[test]
    fn png_alpha_is_kept_as_four_channels() {
        let data = png_bytes(4, 4, true);
        let h = probe(&data).unwrap();
        let px = decode(&data, &h, None).unwrap();
        assert_eq!(px.channels, 4);
        assert!(px.has_alpha());
    }

    fn cmyk_jpeg(colorspace: turbojpeg::Colorspace) -> Vec<u8> {
        let (w, h) = (64usize, 48usize);
        let mut pixels = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&[(x * 4) as u8, (y * 5) as u8, 200, 180]);
            }
        }
        let image = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: w,
            pitch: w * 4,
            height: h,
            format: turbojpeg::PixelFormat::CMYK,
        };
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(95).unwrap();
        c.set_subsamp(turbojpeg::Subsamp::None).unwrap();
        c.set_colorspace(colorspace).unwrap();
        c.compress_to_vec(image).unwrap()
    }

    #[test]
    fn ycck_jpeg_decodes_like_the_same_image_stored_as_cmyk() {
        let cmyk = cmyk_jpeg(turbojpeg::Colorspace::CMYK);
        let ycck = cmyk_jpeg(turbojpeg::Colorspace::YCCK);
        assert_eq!(
            turbojpeg::read_header(&ycck).unwrap().colorspace,
            turbojpeg::Colorspace::YCCK
        );
        let a = decode(&cmyk, &probe(&cmyk).unwrap(), None).unwrap();
        let b = decode(&ycck, &probe(&ycck).unwrap(), None).unwrap();
        assert_eq!((b.width, b.height, b.channels), (64, 48, 3));
        let diff: u64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        assert!(diff / (a.data.len() as u64) < 3, "mean diff {diff}");
    }
}
