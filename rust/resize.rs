//! Geometry: fit a size into a box, resize with Lanczos3, apply EXIF orientation.
//!
//! The rule enforced here is invariant 7 in docs/contracts.md: keep the aspect ratio (±1 px), never
//! upscale, never exceed the box. Resizing uses fast_image_resize (SIMD) with premultiplied
//! alpha for RGBA, so transparent pixels' hidden colours never bleed into visible edges.
//! Each thread keeps its own `Resizer` (it owns reusable buffers); no lock is shared between
//! calls, and we never enable the crate's rayon feature (the caller's pool is the parallelism).

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{CoreError, CoreResult};
use crate::pixels::Pixels;

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// The largest size with the aspect ratio of `width`x`height` that fits in `max`, never larger
/// than the source. Rounds to the nearest pixel (so the ratio holds within ±1 px) and never
/// returns a zero dimension.
pub fn fit_within(width: u32, height: u32, max: Option<(u32, u32)>) -> (u32, u32) {
    let Some((max_w, max_h)) = max else {
        return (width, height);
    };
    let (max_w, max_h) = (max_w.max(1), max_h.max(1));
    if width <= max_w && height <= max_h {
        return (width, height);
    }
    let (w, h) = (u64::from(width), u64::from(height));
    let (mw, mh) = (u64::from(max_w), u64::from(max_h));
    if w * mh <= h * mw {
        // Height is the binding side.
        let nw = (2 * w * mh + h) / (2 * h);
        (clamp_dim(nw, max_w), max_h)
    } else {
        let nh = (2 * h * mw + w) / (2 * w);
        (max_w, clamp_dim(nh, max_h))
    }
}

fn clamp_dim(v: u64, max: u32) -> u32 {
    u32::try_from(v).unwrap_or(max).clamp(1, max)
}

/// Resize to exactly `width`x`height` with Lanczos3 (a no-op when the size is unchanged).
pub fn resize(src: Pixels, width: u32, height: u32) -> CoreResult<Pixels> {
    if src.width == width && src.height == height {
        return Ok(src);
    }
    let pixel_type = match src.channels {
        3 => PixelType::U8x3,
        4 => PixelType::U8x4,
        n => {
            return Err(CoreError::decode(
                "image",
                format!("unexpected {n} channels"),
            ))
        }
    };
    let err = |e: &dyn std::fmt::Display| CoreError::decode("image", format!("resize failed: {e}"));
    let src_image =
        ImageRef::new(src.width, src.height, &src.data, pixel_type).map_err(|e| err(&e))?;
    let mut dst_image = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .use_alpha(true);
    RESIZER
        .with(|r| r.borrow_mut().resize(&src_image, &mut dst_image, &options))
        .map_err(|e| err(&e))?;
    Ok(Pixels {
        width,
        height,
        channels: src.channels,
        data: dst_image.into_vec(),
    })
}

/// Resize one 8-bit plane (a Y, Cb or Cr plane of a YUV image) to `dst_w`x`dst_h`, reading
/// only the top-left `crop_w`x`crop_h` of the `src_w`x`src_h` plane (fractional for chroma
/// planes whose last sample covers less than a full block). An exact-size, whole-pixel crop
/// is a plain row copy.
pub fn resize_plane(
    src: &[u8],
    (src_w, src_h): (u32, u32),
    (crop_w, crop_h): (f64, f64),
    dst: &mut [u8],
    (dst_w, dst_h): (u32, u32),
) -> CoreResult<()> {
    let err = |e: &dyn std::fmt::Display| CoreError::decode("JPEG", format!("resize failed: {e}"));
    if crop_w == f64::from(dst_w) && crop_h == f64::from(dst_h) {
        let (sw, dw) = (src_w as usize, dst_w as usize);
        for (y, row) in dst.chunks_exact_mut(dw).take(dst_h as usize).enumerate() {
            let from = src
                .get(y * sw..y * sw + dw)
                .ok_or_else(|| err(&"plane too small"))?;
            row.copy_from_slice(from);
        }
        return Ok(());
    }
    let src_image = ImageRef::new(src_w, src_h, src, PixelType::U8).map_err(|e| err(&e))?;
    let mut dst_image =
        Image::from_slice_u8(dst_w, dst_h, dst, PixelType::U8).map_err(|e| err(&e))?;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(0.0, 0.0, crop_w, crop_h)
        .use_alpha(false);
    RESIZER
        .with(|r| r.borrow_mut().resize(&src_image, &mut dst_image, &options))
        .map_err(|e| err(&e))
}

/// Apply an EXIF orientation (1..=8), producing upright pixels. Runs after the resize, on the
/// small image, because moving pixels is cheaper there.
pub fn orient(src: Pixels, orientation: u8) -> Pixels {
    if !(2..=8).contains(&orientation) {
        return src;
    }
    let (w, h) = (src.width as usize, src.height as usize);
    let c = usize::from(src.channels);
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let mut out = vec![0u8; src.data.len()];
    for y in 0..oh {
        for x in 0..ow {
            // Source coordinate of output pixel (x, y), matching Pillow's exif_transpose.
            let (sx, sy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x),
            };
            let s = (sy * w + sx) * c;
            let d = (y * ow + x) * c;
            if let (Some(dst), Some(from)) = (out.get_mut(d..d + c), src.data.get(s..s + c)) {
                dst.copy_from_slice(from);
            }
        }
    }
    Pixels {
        width: ow as u32,
        height: oh as u32,
        channels: src.channels,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_never_upscales() {
        assert_eq!(fit_within(100, 50, Some((1000, 1000))), (100, 50));
        assert_eq!(fit_within(100, 50, None), (100, 50));
    }

    #[test]
    fn fit_keeps_aspect_and_stays_in_the_box() {
        assert_eq!(fit_within(2000, 3000, Some((1000, 1500))), (1000, 1500));
        assert_eq!(fit_within(3840, 2160, Some((1920, 1080))), (1920, 1080));
        assert_eq!(fit_within(1000, 562, Some((500, 500))), (500, 281));
        assert_eq!(fit_within(3000, 2000, Some((1000, 1500))), (1000, 667));
        for (w, h, mw, mh) in [(7, 13, 3, 5), (10_000, 1, 100, 100), (1, 10_000, 5, 5)] {
            let (nw, nh) = fit_within(w, h, Some((mw, mh)));
            assert!(nw <= mw && nh <= mh && nw >= 1 && nh >= 1);
            let expect_w = f64::from(w) * f64::from(nh) / f64::from(h);
            let expect_h = f64::from(h) * f64::from(nw) / f64::from(w);
            assert!(
                (f64::from(nw) - expect_w).abs() <= 1.0 || (f64::from(nh) - expect_h).abs() <= 1.0
            );
        }
    }

    fn numbered(w: u32, h: u32) -> Pixels {
        let data = (0..w * h).flat_map(|i| [i as u8, 0, 0]).collect();
        Pixels {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    fn first(p: &Pixels, x: u32, y: u32) -> u8 {
        p.data[((y * p.width + x) * 3) as usize]
    }

    #[test]
    fn orientation_six_rotates_clockwise() {
        // 3x2 source: 0 1 2 / 3 4 5. Rotated 90° clockwise: 3 0 / 4 1 / 5 2.
        let out = orient(numbered(3, 2), 6);
        assert_eq!((out.width, out.height), (2, 3));
        let got: Vec<u8> = (0..3)
            .flat_map(|y| (0..2).map(move |x| (x, y)))
            .map(|(x, y)| first(&out, x, y))
            .collect();
        assert_eq!(got, vec![3, 0, 4, 1, 5, 2]);
    }

    #[test]
    fn orientation_eight_rotates_counter_clockwise() {
        let out = orient(numbered(3, 2), 8);
        let got: Vec<u8> = (0..3)
            .flat_map(|y| (0..2).map(move |x| (x, y)))
            .map(|(x, y)| first(&out, x, y))
            .collect();
        assert_eq!(got, vec![2, 5, 1, 4, 0, 3]);
    }

    #[test]
    fn orientation_one_is_identity() {
        let src = numbered(3, 2);
        assert_eq!(orient(src.clone(), 1), src);
    }

    #[test]
    fn resize_gives_the_requested_size() {
        let out = resize(numbered(40, 30), 20, 15).unwrap();
        assert_eq!(
            (out.width, out.height, out.data.len()),
            (20, 15, 20 * 15 * 3)
        );
    }
}
