//! JPEG -> JPEG without leaving YCbCr: the fast path for photo art.
//!
//! A JPEG stores luma and (usually half-resolution) chroma planes. Decoding to RGB upsamples
//! the chroma and converts colour, the resize then filters three full-resolution channels,
//! and the encoder converts back and downsamples the chroma again. Here libjpeg-turbo decodes
//! to planes (DCT-scaled as usual), each plane is resized on its own with the same Lanczos3
//! filter, and the planes are compressed as 4:2:0 directly: about half the samples to filter
//! and no colour conversion at all, for output that matches the RGB path within JPEG noise.
//! Only plain YCbCr JPEGs take this path (not grayscale, CMYK/YCCK, RGB-coded or lossless);
//! everything else returns `None` and goes through RGB.

use std::cell::RefCell;

use turbojpeg::{Colorspace, Decompressor, ScalingFactor, Subsamp, YuvImage};

use crate::error::{CoreError, CoreResult};
use crate::jpeg::{is_benign_jpeg_warning, jpeg_error, jpeg_scale_denominator};
use crate::resize::resize_plane;

fn jpeg_err(err: &turbojpeg::Error) -> CoreError {
    jpeg_error(err)
}

thread_local! {
    // Per-thread scratch for the decoded and the resized planes: a fresh multi-megabyte
    // buffer per image costs page faults and zeroing comparable to the colour conversion
    // this path saves. Buffers above SCRATCH_KEEP are not kept (a 100 MP image should not
    // pin its memory to a worker thread).
    static SRC: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DST: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

const SCRATCH_KEEP: usize = 16 << 20;

fn with_scratch<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    len: usize,
    work: impl FnOnce(&mut [u8]) -> R,
) -> R {
    let mut buf = key.with(RefCell::take);
    buf.resize(len, 0);
    let result = work(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        key.with(|cell| cell.replace(buf));
    }
    result
}

/// Offsets and lengths of the Y, U and V planes of a planar YUV buffer (align 1).
fn planes<T>(image: &YuvImage<T>) -> CoreResult<[(usize, usize); 3]> {
    let (yw, yh) = image.y_size();
    let (cw, ch) = image.uv_size();
    let y_len = yw
        .checked_mul(yh)
        .ok_or_else(|| CoreError::decode("JPEG", "plane size overflows"))?;
    let c_len = cw
        .checked_mul(ch)
        .ok_or_else(|| CoreError::decode("JPEG", "plane size overflows"))?;
    Ok([(0, y_len), (y_len, c_len), (y_len + c_len, c_len)])
}

fn plane(buf: &[u8], (start, len): (usize, usize)) -> CoreResult<&[u8]> {
    buf.get(start..start + len)
        .ok_or_else(|| CoreError::decode("JPEG", "YUV plane out of range"))
}

fn plane_mut(buf: &mut [u8], (start, len): (usize, usize)) -> CoreResult<&mut [u8]> {
    buf.get_mut(start..start + len)
        .ok_or_else(|| CoreError::decode("JPEG", "YUV plane out of range"))
}

fn dim(v: usize) -> CoreResult<u32> {
    u32::try_from(v).map_err(|_| CoreError::decode("JPEG", "image size overflows"))
}

fn compress(image: YuvImage<&[u8]>, quality: u8) -> CoreResult<Vec<u8>> {
    let err = |e: turbojpeg::Error| CoreError::encode("JPEG", e.to_string());
    let mut compressor = turbojpeg::Compressor::new().map_err(err)?;
    compressor
        .set_quality(i32::from(quality.clamp(1, 100)))
        .map_err(err)?;
    compressor.compress_yuv_to_vec(image).map_err(err)
}

/// Decode `data` at the DCT scale that covers `target`, resize the planes to `target` and
/// encode as 4:2:0 at `quality`. `None` when the JPEG is not plain YCbCr.
pub fn render_jpeg(data: &[u8], target: (u32, u32), quality: u8) -> CoreResult<Option<Vec<u8>>> {
    let mut decompressor = Decompressor::new().map_err(|e| jpeg_err(&e))?;
    let header = decompressor.read_header(data).map_err(|e| jpeg_err(&e))?;
    let plain = header.colorspace == Colorspace::YCbCr
        && !header.is_lossless
        && !matches!(header.subsamp, Subsamp::Gray | Subsamp::Unknown);
    if !plain {
        return Ok(None);
    }
    let (w, h) = (dim(header.width)?, dim(header.height)?);
    let denom = jpeg_scale_denominator(w, h, target);
    let factor = ScalingFactor::new(1, denom as usize);
    decompressor
        .set_scaling_factor(factor)
        .map_err(|e| jpeg_err(&e))?;
    let scaled = header.scaled(factor);
    let subsamp = header.subsamp;
    let len = turbojpeg::yuv_pixels_len(scaled.width, 1, scaled.height, subsamp)
        .map_err(|e| jpeg_err(&e))?;
    with_scratch(&SRC, len, |src_buf| {
        let src = YuvImage {
            pixels: &mut *src_buf,
            width: scaled.width,
            align: 1,
            height: scaled.height,
            subsamp,
        };
        if let Err(err) = decompressor.decompress_to_yuv(data, src) {
            if !is_benign_jpeg_warning(&err) {
                return Err(jpeg_err(&err));
            }
        }
        let src = YuvImage {
            pixels: &*src_buf,
            width: scaled.width,
            align: 1,
            height: scaled.height,
            subsamp,
        };
        if (dim(scaled.width)?, dim(scaled.height)?) == target && subsamp == Subsamp::Sub2x2 {
            // The DCT scale alone gave the target (posters, 4K fanart): re-encode as is.
            return compress(src, quality).map(Some);
        }
        resize_and_compress(&src, target, quality).map(Some)
    })
}

fn resize_and_compress(
    src: &YuvImage<&[u8]>,
    target: (u32, u32),
    quality: u8,
) -> CoreResult<Vec<u8>> {
    let (tw, th) = (target.0 as usize, target.1 as usize);
    let out_len =
        turbojpeg::yuv_pixels_len(tw, 1, th, Subsamp::Sub2x2).map_err(|e| jpeg_err(&e))?;
    with_scratch(&DST, out_len, |out_buf| {
        let shape = YuvImage {
            pixels: (),
            width: tw,
            align: 1,
            height: th,
            subsamp: Subsamp::Sub2x2,
        };
        let src_planes = planes(src)?;
        let out_planes = planes(&shape)?;
        let (src_yw, src_yh) = src.y_size();
        let (src_cw, src_ch) = src.uv_size();
        let (out_yw, out_yh) = shape.y_size();
        let (out_cw, out_ch) = shape.uv_size();
        let (sw, sh) = (src.width as f64, src.height as f64);
        let (hs, vs) = (src.subsamp.width() as f64, src.subsamp.height() as f64);

        // Luma: resize the valid region to the target; when the plane is padded to even
        // size, repeat the last column/row (what libjpeg itself does at the image edge).
        let y_src = plane(src.pixels, src_planes[0])?;
        let y_src_size = (dim(src_yw)?, dim(src_yh)?);
        let y_out = plane_mut(out_buf, out_planes[0])?;
        if (out_yw, out_yh) == (tw, th) {
            resize_plane(y_src, y_src_size, (sw, sh), y_out, target)?;
        } else {
            let mut luma = vec![0u8; tw * th];
            resize_plane(y_src, y_src_size, (sw, sh), &mut luma, target)?;
            for (y, row) in y_out.chunks_exact_mut(out_yw).take(out_yh).enumerate() {
                let line = y.min(th - 1) * tw;
                let from = luma
                    .get(line..line + tw)
                    .ok_or_else(|| CoreError::decode("JPEG", "YUV plane out of range"))?;
                let (body, pad) = row.split_at_mut(tw);
                body.copy_from_slice(from);
                if let Some(&last) = from.last() {
                    pad.fill(last);
                }
            }
        }
        // Chroma: the valid region of a subsampled plane is fractional at odd sizes.
        for c in 1..3 {
            resize_plane(
                plane(src.pixels, src_planes[c])?,
                (dim(src_cw)?, dim(src_ch)?),
                (sw / hs, sh / vs),
                plane_mut(out_buf, out_planes[c])?,
                (dim(out_cw)?, dim(out_ch)?),
            )?;
        }
        let out = YuvImage {
            pixels: &*out_buf,
            width: tw,
            align: 1,
            height: th,
            subsamp: Subsamp::Sub2x2,
        };
        compress(out, quality)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::encode::{encode, OutFormat};
    use crate::pixels::Pixels;
    use crate::probe::probe;
    use crate::resize::{fit_within, resize};

    fn photo(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x + y) * 127 / (w + h)) as u8,
                ]
            })
            .collect()
    }

    fn jpeg(w: u32, h: u32, subsamp: Subsamp) -> Vec<u8> {
        let pixels = photo(w, h);
        let image = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: w as usize,
            pitch: w as usize * 3,
            height: h as usize,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 95, subsamp).unwrap().to_vec()
    }

    fn psnr(a: &Pixels, b: &Pixels) -> f64 {
        assert_eq!((a.width, a.height), (b.width, b.height));
        let mse: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            / a.data.len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }

    #[test]
    fn yuv_path_matches_the_rgb_path() {
        for (w, h, subsamp, max) in [
            (640, 480, Subsamp::Sub2x2, (320, 320)),
            (641, 479, Subsamp::Sub2x2, (300, 300)),
            (500, 301, Subsamp::None, (333, 333)),
            (400, 300, Subsamp::Sub2x1, (200, 150)),
            (401, 301, Subsamp::Sub2x2, (401, 301)),
        ] {
            let src = jpeg(w, h, subsamp);
            let target = fit_within(w, h, Some(max));
            let out = render_jpeg(&src, target, 95).unwrap().expect("plain YCbCr");
            let header = probe(&out).unwrap();
            assert_eq!((header.width, header.height), target);
            let ours = decode(&out, &header, None).unwrap();
            let full = decode(&src, &probe(&src).unwrap(), None).unwrap();
            let rgb = resize(full, target.0, target.1).unwrap();
            let via_rgb = encode(&rgb, OutFormat::Jpeg, 95).unwrap();
            let theirs = decode(&via_rgb, &probe(&via_rgb).unwrap(), None).unwrap();
            let db = psnr(&ours, &theirs);
            assert!(db > 35.0, "{w}x{h} {subsamp:?}: {db:.1} dB");
        }
    }

    #[test]
    fn grayscale_jpeg_is_left_to_the_rgb_path() {
        let pixels = vec![128u8; 32 * 32];
        let image = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: 32,
            pitch: 32,
            height: 32,
            format: turbojpeg::PixelFormat::GRAY,
        };
        let gray = turbojpeg::compress(image, 90, Subsamp::Gray)
            .unwrap()
            .to_vec();
        assert!(render_jpeg(&gray, (16, 16), 90).unwrap().is_none());
    }

    #[test]
    fn truncated_jpeg_fails_on_the_yuv_path_too() {
        let src = jpeg(256, 256, Subsamp::Sub2x2);
        let cut = &src[..src.len() / 2];
        let err = render_jpeg(cut, (64, 64), 90).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
