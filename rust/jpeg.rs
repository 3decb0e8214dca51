//! The libjpeg-turbo adapter, shared by the RGB decoder (`decode`) and the YCbCr fast path
//! (`yuv`): the DCT scale to decode at, libjpeg's errors and warnings in our words, and
//! decompression straight into a buffer of the exact size.
//!
//! JPEG decodes with DCT-domain scaling (1/2, 1/4, 1/8) whenever the caller will shrink the
//! image anyway — most of our speed over Pillow. libjpeg reports some damage only as a
//! warning (the decode "succeeds" with grey blocks); here every warning but one harmless kind
//! is a failure, so a corrupt file is never saved.

use crate::error::{CoreError, CoreResult};
use crate::pixels::Pixels;

/// Smallest DCT scale (1/8, 1/4, 1/2, else 1) whose output still covers `target`, so the
/// final Lanczos pass only ever shrinks.
pub fn jpeg_scale_denominator(width: u32, height: u32, target: (u32, u32)) -> u32 {
    for denom in [8u32, 4, 2] {
        let sw = width.div_ceil(denom);
        let sh = height.div_ceil(denom);
        if sw >= target.0 && sh >= target.1 {
            return denom;
        }
    }
    1
}

pub(crate) fn jpeg_error(err: &turbojpeg::Error) -> CoreError {
    let text = err.to_string();
    let text = text.strip_prefix("TurboJPEG error: ").unwrap_or(&text);
    let lower = text.to_ascii_lowercase();
    let reason = if lower.contains("premature end") {
        format!(
            "the data ends before the image is complete; the file is truncated (libjpeg: {text})"
        )
    } else {
        format!("corrupt or unsupported data (libjpeg: {text})")
    };
    CoreError::decode("JPEG", reason)
}

/// libjpeg reports some damage only as a warning (the decode "succeeds" with grey blocks).
/// We treat warnings as failures, except extraneous bytes between markers, which are harmless
/// and common in files from old cameras.
pub(crate) fn is_benign_jpeg_warning(err: &turbojpeg::Error) -> bool {
    err.to_string().contains("extraneous bytes before marker")
}

/// A libjpeg-turbo decompressor set up for `denom`, with the scaled size and pixel format.
struct JpegJob {
    decompressor: turbojpeg::Decompressor,
    width: usize,
    height: usize,
    format: turbojpeg::PixelFormat,
}

impl JpegJob {
    fn new(data: &[u8], denom: u32) -> CoreResult<Self> {
        use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

        let mut decompressor = Decompressor::new().map_err(|e| jpeg_error(&e))?;
        // scans.rs refuses such files before decoding; this is libjpeg-turbo's own count,
        // in case a stream ever parses differently there than in our marker walk.
        decompressor
            .set_scan_limit(crate::scans::MAX_SCANS)
            .map_err(|e| jpeg_error(&e))?;
        let header = decompressor.read_header(data).map_err(|e| jpeg_error(&e))?;
        let factor = if header.is_lossless || denom <= 1 {
            ScalingFactor::ONE
        } else {
            ScalingFactor::new(1, denom as usize)
        };
        decompressor
            .set_scaling_factor(factor)
            .map_err(|e| jpeg_error(&e))?;
        let scaled = header.scaled(factor);
        let format = if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
            PixelFormat::CMYK
        } else {
            PixelFormat::RGB
        };
        Ok(Self {
            decompressor,
            width: scaled.width,
            height: scaled.height,
            format,
        })
    }

    fn is_cmyk(&self) -> bool {
        self.format == turbojpeg::PixelFormat::CMYK
    }

    fn len(&self) -> CoreResult<usize> {
        self.width
            .checked_mul(self.format.size())
            .and_then(|p| p.checked_mul(self.height))
            .ok_or_else(|| CoreError::decode("JPEG", "image size overflows"))
    }

    fn size(&self) -> CoreResult<(u32, u32)> {
        let overflow = || CoreError::decode("JPEG", "image size overflows");
        Ok((
            u32::try_from(self.width).map_err(|_| overflow())?,
            u32::try_from(self.height).map_err(|_| overflow())?,
        ))
    }

    /// Decompress into `out`, which must hold exactly `len()` bytes.
    fn run(mut self, data: &[u8], out: &mut [u8]) -> CoreResult<()> {
        if out.len() != self.len()? {
            return Err(CoreError::decode(
                "JPEG",
                "output buffer has the wrong size",
            ));
        }
        let image = turbojpeg::Image {
            pixels: out,
            width: self.width,
            pitch: self.width * self.format.size(),
            height: self.height,
            format: self.format,
        };
        match self.decompressor.decompress(data, image) {
            Err(err) if !is_benign_jpeg_warning(&err) => Err(jpeg_error(&err)),
            _ => Ok(()),
        }
    }
}

pub(crate) fn decode_jpeg(data: &[u8], denom: u32) -> CoreResult<Pixels> {
    let job = JpegJob::new(data, denom)?;
    let (width, height) = job.size()?;
    let cmyk = job.is_cmyk();
    let mut pixels = vec![0u8; job.len()?];
    job.run(data, &mut pixels)?;
    let data = if cmyk { cmyk_to_rgb(&pixels) } else { pixels };
    Ok(Pixels {
        width,
        height,
        channels: 3,
        data,
    })
}

/// When a JPEG decodes straight to the wanted RGB size at DCT scale 1/`denom` (no CMYK
/// conversion needed), its size; the caller can then decode into its own buffer with
/// `decode_jpeg_rgb_into` and skip a copy of the whole image.
pub fn jpeg_direct_size(data: &[u8], denom: u32) -> CoreResult<Option<(u32, u32)>> {
    let job = JpegJob::new(data, denom)?;
    if job.is_cmyk() {
        return Ok(None);
    }
    job.size().map(Some)
}

/// Decode a (non-CMYK) JPEG at DCT scale 1/`denom` as RGB into `out`.
pub fn decode_jpeg_rgb_into(data: &[u8], denom: u32, out: &mut [u8]) -> CoreResult<()> {
    let job = JpegJob::new(data, denom)?;
    if job.is_cmyk() {
        return Err(CoreError::decode("JPEG", "CMYK cannot be decoded in place"));
    }
    job.run(data, out)
}

/// Adobe CMYK JPEGs (the only kind in the wild) store inverted ink values, so each channel
/// is already "amount of white": R = C' * K' / 255. This matches Pillow and browsers.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        if let [c, m, y, k] = *px {
            let k = u32::from(k);
            for v in [c, m, y] {
                // (v*k + 127) / 255 with exact rounding, never above 255.
                let t = u32::from(v) * k + 128;
                out.push(((t + (t >> 8)) >> 8) as u8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_conversion_matches_inverted_adobe_convention() {
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 128, 255, 255]), vec![0, 128, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), vec![0, 0, 0]);
    }
}
