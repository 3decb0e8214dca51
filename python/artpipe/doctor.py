"""What this artpipe installation is: the facts a user pastes into a bug report.

A slow or failing install is usually one of a few things — a source build without
libjpeg-turbo's SIMD (no nasm on the build machine), a wheel for another platform,
an old CPU without AVX2, a stale compiled core. ``artpipe doctor`` shows each of them
from the source of truth: the compiled core reports what it was built with and what
it detects at run time (``_core.build_info``), and the installed distribution's own
metadata says which wheel tag pip installed and whether it came from a source tree.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

from artpipe import _core

__all__ = ["Fact", "facts"]


@dataclass(frozen=True, slots=True)
class Fact:
    """One line of the doctor's report; ``problem`` says what to do when it is a problem."""

    name: str
    value: str
    problem: str | None = None


def facts() -> list[Fact]:
    """Every fact, in the order they are printed."""
    core = dict(_core.build_info())
    out = [
        Fact("artpipe", _installed_version()),
        Fact("python", f"{platform.python_implementation()} {platform.python_version()}"),
        Fact("platform", f"{platform.system()} {platform.release()} {platform.machine()}"
                         f" ({_libc()})"),
        Fact("install", _install_kind()),
        Fact("wheel tag", _wheel_tag()),
        Fact("core", f"{core.get('core_version', '?')} for {core.get('target', '?')}"),
        Fact("libjpeg-turbo", core.get("libjpeg_turbo", "unknown")),
        _simd_fact(core),
        Fact("resize SIMD", core.get("resize_cpu", "unknown"),
             None if core.get("resize_cpu") not in (None, "none") else
             "this CPU has no SSE4.1/AVX2/NEON: resizing runs without SIMD"),
        Fact("formats", core.get("formats", "unknown").replace(",", ", ")),
        Fact("pixel limit", f"{int(core.get('max_pixels', '0')):,} pixels per image"),
    ]
    return out


def _simd_fact(core: dict[str, str]) -> Fact:
    built = core.get("jpeg_simd_built") == "true"
    in_use = core.get("jpeg_simd", "unknown")
    if not built:
        return Fact(
            "JPEG SIMD", in_use,
            "this core was built without nasm, so JPEG decode/encode use libjpeg-turbo's C "
            "paths (about 2x slower): install nasm and reinstall from source, or install a "
            "release wheel",
        )
    return Fact("JPEG SIMD", in_use)


def _installed_version() -> str:
    try:
        return metadata.version("artpipe")
    except metadata.PackageNotFoundError:
        return f"{_core.__version__} (source tree, not installed)"


def _wheel_tag() -> str:
    """The tag pip recorded in the installed WHEEL file (``manylinux…``, ``linux_x86_64``…)."""
    try:
        text = metadata.distribution("artpipe").read_text("WHEEL") or ""
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Tag:")]
    return ", ".join(tags) or "unknown"


def _install_kind() -> str:
    """Release wheel, local build or editable source tree, from PEP 610's direct_url.json."""
    try:
        raw = metadata.distribution("artpipe").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return "not installed (running from a source tree)"
    if not raw:
        return "from an index (a published wheel or sdist)"
    try:
        info = json.loads(raw)
    except ValueError:
        return "unknown"
    url = str(info.get("url", ""))
    if info.get("dir_info", {}).get("editable"):
        return f"editable source tree ({url})"
    if url.endswith(".whl"):
        return f"wheel file ({url})"
    return f"built from source ({url})"


def _libc() -> str:
    name, version = platform.libc_ver()
    return f"{name} {version}" if name else sys.platform
