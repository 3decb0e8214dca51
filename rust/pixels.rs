//! Decoded pixels, the one value every stage after decoding passes on: resize takes and
//! returns them, encode reads them. 8-bit samples, row-major, RGB or RGBA with straight
//! alpha — nothing else, so no stage has to handle a colour type another stage never makes.

/// Decoded pixels: 8-bit RGB (3 channels) or RGBA (4 channels, straight alpha), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Pixels {
    /// True when some pixel is not fully opaque.
    pub fn has_alpha(&self) -> bool {
        self.channels == 4 && self.data.chunks_exact(4).any(|p| p.get(3) != Some(&255))
    }
}
