//! Images the unit tests generate (never files from disk), shared by the modules' tests.

/// Baseline JPEG, quality 90, 4:2:0, of a deterministic RGB pattern.
pub fn jpeg_bytes(width: usize, height: usize) -> Vec<u8> {
    let pixels = rgb_pattern(width, height);
    turbojpeg::compress(
        rgb_image(&pixels, width, height),
        90,
        turbojpeg::Subsamp::Sub2x2,
    )
    .unwrap()
    .to_vec()
}

/// The same pattern as a progressive JPEG (libjpeg-turbo's default scan script).
pub fn progressive_jpeg_bytes(width: usize, height: usize) -> Vec<u8> {
    let pixels = rgb_pattern(width, height);
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_progressive(true).unwrap();
    compressor
        .compress_to_vec(rgb_image(&pixels, width, height))
        .unwrap()
}

fn rgb_pattern(width: usize, height: usize) -> Vec<u8> {
    (0..width * height * 3).map(|i| (i % 251) as u8).collect()
}

fn rgb_image(pixels: &[u8], width: usize, height: usize) -> turbojpeg::Image<&[u8]> {
    turbojpeg::Image {
        pixels,
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    }
}

pub fn png_bytes(width: u32, height: u32, rgba: bool) -> Vec<u8> {
    use image::ImageEncoder;
    let channels = if rgba { 4 } else { 3 };
    let pixels: Vec<u8> = (0..width * height * channels)
        .map(|i| (i % 7) as u8)
        .collect();
    let mut out = Vec::new();
    let color = if rgba {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&pixels, width, height, color)
        .unwrap();
    out
}
