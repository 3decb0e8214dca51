//! Images the unit tests generate (never files from disk), shared by the modules' tests.

pub fn jpeg_bytes(width: usize, height: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2)
        .unwrap()
        .to_vec()
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
