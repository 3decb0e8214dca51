//! Work per JPEG is bounded by its scan count, counted before any decoding.
//!
//! A progressive JPEG may repeat a refinement scan thousands of times; each scan makes the
//! decoder pass over every coefficient of the image again, so a 250 KB file costs a minute of
//! CPU and a 660 KB one almost five (measured with libjpeg-turbo 3). Real files have at most a
//! few dozen scans (libjpeg's progressive script uses 10; three components with spectral
//! selection, well under 30). Without this count one hostile poster holds a render worker for
//! minutes on every run. The walk below reads marker segments and skips entropy-coded data in
//! one linear pass over the bytes, allocates nothing, and stops at the first scan over the limit.

use crate::error::{CoreError, CoreResult};

/// The most scans (SOS segments) a JPEG may have; far above any real encoder's output.
pub const MAX_SCANS: u32 = 100;

/// Refuse a JPEG with more than `limit` scans, before decoding. Bytes that are not a
/// well-formed marker stream are left to the decoder, which reports them as it always has.
pub fn check_scan_count(data: &[u8], limit: u32) -> CoreResult<()> {
    let scans = count_scans(data, limit);
    if scans > limit {
        return Err(CoreError::TooComplex {
            format: "JPEG",
            reason: format!(
                "it has more than {limit} scans (a progressive JPEG that repeats its scans \
                 costs minutes of CPU to decode); refused before decoding — the source serves a \
                 broken or hostile file, use another URL"
            ),
        });
    }
    Ok(())
}

/// Number of SOS markers, counting stops once it passes `limit`.
fn count_scans(data: &[u8], limit: u32) -> u32 {
    let mut scans = 0u32;
    let mut at = 2; // after SOI
    if data.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return 0;
    }
    loop {
        // Fill bytes (0xFF 0xFF ...) may precede a marker.
        let Some(marker) = next_marker(data, &mut at) else {
            return scans;
        };
        match marker {
            0xD9 => return scans,           // EOI
            0xD0..=0xD7 | 0x01 => continue, // RSTn, TEM: no length
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (data.get(at), data.get(at + 1)) else {
            return scans;
        };
        let length = usize::from(u16::from_be_bytes([hi, lo]));
        if length < 2 {
            return scans;
        }
        at += length;
        if marker == 0xDA {
            scans += 1;
            if scans > limit {
                return scans;
            }
            skip_entropy_data(data, &mut at);
        }
    }
}

/// Read the marker at `at` (after any 0xFF fill), advancing past it.
fn next_marker(data: &[u8], at: &mut usize) -> Option<u8> {
    if *data.get(*at)? != 0xFF {
        return None;
    }
    while *data.get(*at)? == 0xFF {
        *at += 1;
    }
    let marker = *data.get(*at)?;
    *at += 1;
    Some(marker)
}

/// Skip entropy-coded bytes up to the next real marker: 0xFF 0x00 is a stuffed byte and
/// RSTn markers belong to the scan.
fn skip_entropy_data(data: &[u8], at: &mut usize) {
    while let Some(rest) = data.get(*at..) {
        let Some(ff) = rest.iter().position(|&b| b == 0xFF) else {
            *at = data.len();
            return;
        };
        *at += ff;
        match data.get(*at + 1) {
            Some(0x00 | 0xD0..=0xD7) => *at += 2,
            Some(0xFF) => *at += 1,
            _ => return, // a marker (or the end): the caller reads it
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_images::progressive_jpeg_bytes;

    /// `jpeg` with its last scan before EOI repeated `extra` more times (the attack).
    fn with_repeated_scan(jpeg: &[u8], extra: usize) -> Vec<u8> {
        let last_sos = jpeg.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        let eoi = jpeg.len() - 2;
        let scan = &jpeg[last_sos..eoi];
        let mut out = jpeg[..eoi].to_vec();
        for _ in 0..extra {
            out.extend_from_slice(scan);
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    #[test]
    fn a_real_progressive_jpeg_is_counted_and_passes() {
        let jpeg = progressive_jpeg_bytes(64, 48);
        let scans = count_scans(&jpeg, MAX_SCANS);
        assert!((2..=MAX_SCANS).contains(&scans), "{scans}");
        check_scan_count(&jpeg, MAX_SCANS).unwrap();
    }

    #[test]
    fn a_repeated_refinement_scan_is_refused_before_decoding() {
        let jpeg = with_repeated_scan(&progressive_jpeg_bytes(64, 48), 5000);
        let err = check_scan_count(&jpeg, MAX_SCANS).unwrap_err();
        assert!(err.to_string().contains("more than 100 scans"), "{err}");
        assert_eq!(
            count_scans(&jpeg, MAX_SCANS),
            MAX_SCANS + 1,
            "stops at the limit"
        );
    }

    #[test]
    fn the_decoder_enforces_the_same_limit_on_its_own() {
        let jpeg = with_repeated_scan(&progressive_jpeg_bytes(64, 48), 200);
        let err = crate::jpeg::decode_jpeg(&jpeg, 1).unwrap_err();
        assert!(err.to_string().contains("scans"), "{err}");
    }

    #[test]
    fn garbage_and_truncation_are_left_to_the_decoder() {
        for bytes in [
            &b""[..],
            b"\xFF\xD8",
            b"\xFF\xD8\xFF\xDA\x00",
            b"\xFF\xD8\xFF",
            b"GIF89a",
        ] {
            check_scan_count(bytes, MAX_SCANS).unwrap();
        }
        let jpeg = progressive_jpeg_bytes(16, 16);
        for cut in 0..jpeg.len() {
            check_scan_count(&jpeg[..cut], MAX_SCANS).unwrap();
        }
    }
}
