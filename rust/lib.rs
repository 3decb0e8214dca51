//! artpipe's image core. Only this file (and `error.rs`) knows about Python: every function
//! extracts plain values while attached, releases the GIL (`py.detach`) for all the work,
//! catches any panic inside the detached closure (so Python sees `InternalError`, never
//! `PanicException`), and converts the result back. The modules below are plain Rust,
//! unit-tested by `cargo test` without a Python interpreter; the glue is behind the
//! `python` feature, which `[tool.maturin]` enables for every wheel build.
#![forbid(unsafe_code)]

pub mod blobs;
pub mod build_info;
pub mod decode;
pub mod encode;
pub mod error;
pub mod jpeg;
pub mod pixels;
pub mod probe;
pub mod render;
pub mod resize;
pub mod scans;
#[cfg(test)]
mod test_images;
pub mod write;
pub mod yuv;

#[cfg(feature = "python")]
#[pyo3::pymodule]
mod _core {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::PathBuf;

    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::{PyByteArray, PyBytes};

    use crate::encode::OutFormat;
    use crate::error::{self, CoreResult};
    use crate::render::{DecodePlan, Request};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("MAX_PIXELS", crate::render::DEFAULT_MAX_PIXELS)?;
        m.add("TEMP_SUFFIX", crate::write::TEMP_SUFFIX)
    }

    /// What this build contains and uses on this CPU, as (name, value) pairs.
    #[pyfunction]
    fn build_info() -> Vec<(&'static str, String)> {
        crate::build_info::facts()
    }

    /// Run `work` with the GIL released; a panic becomes `InternalError`.
    fn detached<T: Send>(
        py: Python<'_>,
        function: &str,
        work: impl FnOnce() -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        raised(
            function,
            py.detach(move || catch_unwind(AssertUnwindSafe(work))),
        )
    }

    /// What `catch_unwind` around a core call gave, as Python sees it: the core's error as
    /// its exception, a panic as `InternalError`.
    fn raised<T>(function: &str, outcome: std::thread::Result<CoreResult<T>>) -> PyResult<T> {
        match outcome {
            Ok(result) => result.map_err(PyErr::from),
            Err(payload) => Err(error::internal(function, payload.as_ref())),
        }
    }

    /// Inputs up to this size are probed without releasing the GIL (see `header_work`).
    const ATTACHED_HEADER_BYTES: usize = 1 << 20;

    /// Header work (`sniff`, `probe`): microseconds, so releasing the GIL for it costs more
    /// than it gives (the caller, often the event loop, then waits to take the GIL back
    /// while other threads run). Only a large input, whose markers may take longer to walk,
    /// is probed detached. A panic becomes `InternalError` either way.
    fn header_work<T: Send>(
        py: Python<'_>,
        function: &str,
        len: usize,
        work: impl FnOnce() -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        if len > ATTACHED_HEADER_BYTES {
            return detached(py, function, work);
        }
        raised(function, catch_unwind(AssertUnwindSafe(work)))
    }

    fn request(
        max_size: Option<(u32, u32)>,
        format: Option<&str>,
        quality: u8,
        max_pixels: u64,
    ) -> PyResult<Request> {
        let format = match format {
            None => None,
            Some(name) => Some(OutFormat::parse(name).ok_or_else(|| {
                PyValueError::new_err(format!("format must be 'jpeg' or 'png', not {name:?}"))
            })?),
        };
        Ok(Request {
            max_size,
            format,
            quality,
            max_pixels,
        })
    }

    /// Header only: (format, width, height, orientation), width/height as stored.
    #[pyfunction]
    fn probe(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<(&'static str, u32, u32, u8)> {
        let bytes = data.as_bytes();
        let header = header_work(py, "probe", bytes.len(), || crate::probe::probe(bytes))?;
        Ok((
            header.format.name(),
            header.width,
            header.height,
            header.orientation,
        ))
    }

    /// The format the magic bytes name ("jpeg", "png", "gif", "webp"), or None: the one sniff.
    #[pyfunction]
    fn sniff(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Option<&'static str>> {
        let bytes = data.as_bytes();
        let format = header_work(py, "sniff", bytes.len(), || {
            Ok(crate::probe::sniff(bytes).ok())
        })?;
        Ok(format.map(|f| f.name()))
    }

    /// Encoded bytes (the very same bytes object when passed through).
    #[pyfunction]
    #[pyo3(signature = (data, *, max_size=None, format=None, quality=90, max_pixels=100_000_000))]
    fn render<'py>(
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        max_size: Option<(u32, u32)>,
        format: Option<&str>,
        quality: u8,
        max_pixels: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let req = request(max_size, format, quality, max_pixels)?;
        let bytes = data.as_bytes();
        let out = detached(py, "render", || {
            crate::render::render(bytes, &req)
                .map(|r| (!r.passthrough).then(|| r.bytes.into_owned()))
        })?;
        Ok(match out {
            Some(encoded) => PyBytes::new(py, &encoded),
            None => data.clone(),
        })
    }

    /// Render and write atomically: (path, format, width, height, bytes, sha256, passthrough),
    /// and None. With `root`, no folder below it is followed if it is a link (see `write.rs`).
    /// With `stage`, the write stops at the temp file beside the target (not yet durable or
    /// in place) and the `StagedWrite` for `commit_writes` comes instead of None.
    #[pyfunction]
    #[pyo3(signature = (data, path, *, root=None, max_size=None, format=None, quality=90, max_pixels=100_000_000, stage=false))]
    #[allow(clippy::too_many_arguments)]
    fn write_image(
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        path: PathBuf,
        root: Option<PathBuf>,
        max_size: Option<(u32, u32)>,
        format: Option<&str>,
        quality: u8,
        max_pixels: u64,
        stage: bool,
    ) -> PyResult<(SavedTuple, Option<StagedWrite>)> {
        let req = request(max_size, format, quality, max_pixels)?;
        let bytes = data.as_bytes();
        let (saved, staged) = detached(py, "write_image", || {
            let target = crate::write::Target {
                path: &path,
                root: root.as_deref(),
            };
            if stage {
                crate::render::save_staged(bytes, &target, &req).map(|(s, w)| (s, Some(w)))
            } else {
                crate::render::save(bytes, &target, &req).map(|s| (s, None))
            }
        })?;
        Ok((saved_tuple(saved), staged.map(StagedWrite::new)))
    }

    /// What `write_image` returns: (path, format, width, height, bytes, sha256, passthrough).
    type SavedTuple = (String, &'static str, u32, u32, u64, String, bool);

    fn saved_tuple(saved: crate::render::Saved) -> SavedTuple {
        (
            saved.path.to_string_lossy().into_owned(),
            saved.format.name(),
            saved.width,
            saved.height,
            saved.bytes,
            saved.sha256,
            saved.passthrough,
        )
    }

    /// A rendered image waiting beside its target for `commit_writes` (see `write::Staged`).
    /// Dropped uncommitted, its temp file is removed.
    #[pyclass(module = "artpipe._core", frozen)]
    struct StagedWrite {
        staged: std::sync::Mutex<Option<crate::write::Staged>>,
        #[pyo3(get)]
        mtime_ns: i64,
    }

    impl StagedWrite {
        fn new(staged: crate::write::Staged) -> Self {
            Self {
                mtime_ns: staged.mtime_ns,
                staged: std::sync::Mutex::new(Some(staged)),
            }
        }
    }

    /// Write bytes that are already a finished image (a copy of a file this run rendered and
    /// checked) atomically, without decoding them again: with `stage`, leave them staged for
    /// `commit_writes` and return the `StagedWrite`; otherwise write them durably now.
    #[pyfunction]
    #[pyo3(signature = (data, path, *, root=None, stage=false))]
    fn write_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        path: PathBuf,
        root: Option<PathBuf>,
        stage: bool,
    ) -> PyResult<Option<StagedWrite>> {
        let bytes = data.as_bytes();
        let staged = detached(py, "write_bytes", || {
            let target = crate::write::Target {
                path: &path,
                root: root.as_deref(),
            };
            crate::write::check_target(&target)?;
            if stage {
                crate::write::stage(&target, bytes).map(Some)
            } else {
                crate::write::write_atomic(&target, bytes).map(|()| None)
            }
        })?;
        Ok(staged.map(StagedWrite::new))
    }

    /// What `write_blobs` says of one blob: (its sha256, None) or (None, why not).
    type BlobStored = (
        Option<String>,
        Option<Py<pyo3::exceptions::PyBaseException>>,
    );

    /// Store each of `blobs` in the download cache's `folder` (named by sha256, written
    /// whole, not fsynced: `blobs.rs`), all in one call: for each, (sha256, None) or
    /// (None, the OSError that says why it was not stored).
    #[pyfunction]
    #[pyo3(signature = (blobs, folder, *, temp_prefix=".tmp-"))]
    fn write_blobs(
        py: Python<'_>,
        blobs: Vec<Bound<'_, PyBytes>>,
        folder: PathBuf,
        temp_prefix: &str,
    ) -> PyResult<Vec<BlobStored>> {
        let data: Vec<&[u8]> = blobs.iter().map(|b| b.as_bytes()).collect();
        let stored = detached(py, "write_blobs", || {
            Ok(data
                .iter()
                .map(|bytes| crate::blobs::store(&folder, bytes, temp_prefix))
                .collect::<Vec<_>>())
        })?;
        Ok(stored
            .into_iter()
            .map(|result| match result {
                Ok(sha) => (Some(sha), None),
                Err(e) => (None, Some(PyErr::from(e).into_value(py))),
            })
            .collect())
    }

    /// Put staged writes in place, durably, with one sync pass for the batch: for each, None
    /// (done) or the exception that says why that file was not written (the old one stays).
    #[pyfunction]
    fn commit_writes(
        py: Python<'_>,
        writes: Vec<Bound<'_, StagedWrite>>,
    ) -> PyResult<Vec<Option<Py<pyo3::exceptions::PyBaseException>>>> {
        let mut batch = Vec::with_capacity(writes.len());
        let mut taken = Vec::with_capacity(writes.len());
        for write in &writes {
            let staged = write
                .get()
                .staged
                .lock()
                .map_err(|_| PyValueError::new_err("a staged write was poisoned"))?
                .take();
            taken.push(staged.is_some());
            batch.extend(staged);
        }
        let mut results =
            detached(py, "commit_writes", || Ok(crate::write::commit(batch)))?.into_iter();
        Ok(taken
            .into_iter()
            .map(|was_staged| {
                if !was_staged {
                    return Some(
                        PyValueError::new_err("this staged write was already committed")
                            .into_value(py),
                    );
                }
                match results.next() {
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(PyErr::from(e).into_value(py)),
                    None => Some(PyValueError::new_err("a staged write was lost").into_value(py)),
                }
            })
            .collect())
    }

    /// Upright pixels: (buffer, height, width, channels), channels 3 (RGB) or 4 (RGBA).
    #[pyfunction]
    #[pyo3(signature = (data, *, max_size=None, max_pixels=100_000_000))]
    fn decode<'py>(
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        max_size: Option<(u32, u32)>,
        max_pixels: u64,
    ) -> PyResult<(Bound<'py, PyByteArray>, u32, u32, u8)> {
        let bytes = data.as_bytes();
        let plan = detached(py, "decode", || {
            crate::render::plan_pixels(bytes, max_size, max_pixels)
        })?;
        match plan {
            DecodePlan::Done(px) => Ok((
                PyByteArray::new(py, &px.data),
                px.height,
                px.width,
                px.channels,
            )),
            DecodePlan::Direct {
                width,
                height,
                denom,
            } => {
                // Decode straight into the bytearray (not yet visible to any other Python
                // code), with the GIL released: no intermediate image-sized buffer.
                let len = (width as usize) * (height as usize) * 3;
                let array = PyByteArray::new_with(py, len, |buf| {
                    detached(py, "decode", || {
                        crate::jpeg::decode_jpeg_rgb_into(bytes, denom, buf)
                    })
                })?;
                Ok((array, height, width, 3))
            }
        }
    }

    /// Encode raw 8-bit RGB/RGBA rows (`width * height * channels` bytes) as JPEG or PNG.
    #[pyfunction]
    #[pyo3(signature = (data, width, height, channels, *, format="jpeg", quality=90))]
    fn encode<'py>(
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        width: u32,
        height: u32,
        channels: u8,
        format: &str,
        quality: u8,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let req = request(None, Some(format), quality, 0)?;
        let out_format = req.format.unwrap_or(OutFormat::Jpeg);
        let bytes = data.as_bytes();
        let expected = u64::from(width) * u64::from(height) * u64::from(channels);
        if !matches!(channels, 3 | 4) || width == 0 || height == 0 || expected != bytes.len() as u64
        {
            return Err(PyValueError::new_err(format!(
                "pixels must be {width}x{height}x{channels} with 3 or 4 channels \
                 ({expected} bytes), got {} bytes",
                bytes.len()
            )));
        }
        let view = crate::encode::View {
            width,
            height,
            channels,
            data: bytes,
        };
        let encoded = detached(py, "encode", || {
            crate::encode::encode_view(&view, out_format, quality)
        })?;
        Ok(PyBytes::new(py, &encoded))
    }

    /// Panics on purpose (inside the detached, guarded closure): lets the tests prove that a
    /// Rust panic reaches Python as artpipe.errors.InternalError. Not part of the API.
    #[pyfunction]
    fn _debug_panic(py: Python<'_>, message: String) -> PyResult<()> {
        detached(py, "_debug_panic", move || -> CoreResult<()> {
            panic!("{message}")
        })
    }
}
