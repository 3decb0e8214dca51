//! One error type for the whole core, and the single place it becomes a Python exception.
//!
//! Variants are named by what went wrong for the user (`Decode`, `TooLarge`, ...), never by
//! the library that noticed it, and carry the context their message needs. The Python classes
//! are defined once in `artpipe/errors.py` and imported here, so `except artpipe.DecodeError`
//! catches a bad JPEG whether Python or Rust noticed it.

use std::path::PathBuf;

/// Everything the core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The bytes claim a known image format but cannot be decoded (truncated, corrupt, empty).
    #[error("could not decode {format}: {reason}")]
    Decode {
        format: &'static str,
        reason: String,
    },

    /// The bytes are not an image format artpipe reads (HTML, random bytes, BMP, AVIF, ...).
    #[error("{reason}")]
    Unsupported { reason: String },

    /// The header declares more pixels than the limit; refused before any pixel allocation.
    #[error(
        "{format} image is {width}x{height} = {pixels} pixels, over the limit of {limit} pixels; \
         refused before decoding (raise max_pixels if this image is legitimate)"
    )]
    TooLarge {
        format: &'static str,
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },

    /// Decoding would take unbounded work (e.g. a JPEG with thousands of scans); refused
    /// before decoding. Its own variant so callers can tell a refusal, which repeats for the
    /// same bytes, from a corrupt or truncated file, which may not.
    #[error("could not decode {format}: {reason}")]
    TooComplex {
        format: &'static str,
        reason: String,
    },

    /// Encoding the output failed.
    #[error("could not encode {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },

    /// Writing the file failed; the old file (if any) is untouched.
    #[error("{message}: {}", path.display())]
    Save {
        errno: i32,
        message: String,
        path: PathBuf,
    },
}

/// Result alias used by every module of the core.
pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    pub(crate) fn decode(format: &'static str, reason: impl Into<String>) -> Self {
        Self::Decode {
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn encode(format: &'static str, reason: impl Into<String>) -> Self {
        Self::Encode {
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn save(errno: i32, message: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self::Save {
            errno,
            message: message.into(),
            path: path.into(),
        }
    }

    /// A `Save` error from an `io::Error`, keeping its errno so Python sees the real cause.
    pub(crate) fn from_io(what: &str, err: &std::io::Error, path: impl Into<PathBuf>) -> Self {
        Self::save(
            err.raw_os_error().unwrap_or(0),
            format!("{what}: {err}; the old file (if any) was kept"),
            path,
        )
    }
}

/// Text of a caught panic payload (`&str` or `String`), for the InternalError message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(feature = "python")]
mod python {
    use super::{panic_message, CoreError};
    use pyo3::PyErr;

    pyo3::import_exception!(artpipe.errors, DecodeError);
    pyo3::import_exception!(artpipe.errors, UnsupportedFormatError);
    pyo3::import_exception!(artpipe.errors, ImageTooLargeError);
    pyo3::import_exception!(artpipe.errors, ImageTooComplexError);
    pyo3::import_exception!(artpipe.errors, EncodeError);
    pyo3::import_exception!(artpipe.errors, SaveError);
    pyo3::import_exception!(artpipe.errors, InternalError);

    impl From<CoreError> for PyErr {
        fn from(err: CoreError) -> Self {
            let message = err.to_string();
            match err {
                CoreError::Decode { .. } => DecodeError::new_err((message, None::<String>)),
                CoreError::Unsupported { .. } => {
                    UnsupportedFormatError::new_err((message, None::<String>))
                }
                CoreError::TooLarge { .. } => {
                    ImageTooLargeError::new_err((message, None::<String>))
                }
                CoreError::TooComplex { .. } => {
                    ImageTooComplexError::new_err((message, None::<String>))
                }
                CoreError::Encode { .. } => EncodeError::new_err((message, None::<String>)),
                CoreError::Save {
                    errno,
                    message,
                    path,
                } => SaveError::new_err((errno, message, path.to_string_lossy().into_owned())),
            }
        }
    }

    /// The error for a panic caught at the boundary: never a PanicException (a BaseException
    /// that `except Exception` misses and that would end a whole run).
    pub fn internal(function: &str, payload: &(dyn std::any::Any + Send)) -> PyErr {
        InternalError::new_err(format!(
            "bug in {function}: {}; please report it with the URL of the image",
            panic_message(payload)
        ))
    }
}

#[cfg(feature = "python")]
pub use python::internal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_message_names_size_and_limit() {
        let err = CoreError::TooLarge {
            format: "PNG",
            width: 100_000,
            height: 100_000,
            pixels: 10_000_000_000,
            limit: 100_000_000,
        };
        let text = err.to_string();
        assert!(text.contains("100000x100000"), "{text}");
        assert!(text.contains("100000000"), "{text}");
    }

    #[test]
    fn save_message_names_the_path() {
        let err = CoreError::save(21, "target is a directory", "/tmp/x/poster.jpg");
        assert_eq!(err.to_string(), "target is a directory: /tmp/x/poster.jpg");
    }

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let a: Box<dyn std::any::Any + Send> = Box::new("boom");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        let c: Box<dyn std::any::Any + Send> = Box::new(42_u8);
        assert_eq!(panic_message(a.as_ref()), "boom");
        assert_eq!(panic_message(b.as_ref()), "bang");
        assert_eq!(panic_message(c.as_ref()), "unknown panic payload");
    }
}
