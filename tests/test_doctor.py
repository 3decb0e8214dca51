"""`artpipe doctor` and `--version`: every field a bug report needs, and only true ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from artpipe import _core
from artpipe.cli import main
from click.testing import CliRunner

FIELDS = [
    "artpipe", "python", "platform", "install", "wheel tag", "core", "libjpeg-turbo",
    "JPEG SIMD", "resize SIMD", "formats", "pixel limit",
]


def _doctor_json(env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the real command in a child, so environment switches read at start-up apply."""
    out = subprocess.run(
        [sys.executable, "-m", "artpipe.cli", "doctor", "--json"],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def test_doctor_reports_every_field_in_order() -> None:
    facts = _doctor_json()
    assert list(facts) == FIELDS
    assert all(value for value in facts.values()), facts


def test_doctor_tells_what_the_core_was_built_with() -> None:
    core = dict(_core.build_info())
    facts = _doctor_json()
    assert facts["libjpeg-turbo"] == core["libjpeg_turbo"]
    assert facts["libjpeg-turbo"].split(".")[0].isdigit()
    assert facts["formats"] == "jpeg, png, webp, gif"
    assert facts["pixel limit"].startswith(f"{_core.MAX_PIXELS:,} ")
    assert facts["resize SIMD"] in {"none", "sse4.1", "avx2", "neon"}
    if core["jpeg_simd_built"] == "true":
        assert facts["JPEG SIMD"] in {"sse2", "avx2", "neon", "on"}
    else:
        assert facts["JPEG SIMD"] == "off (built without SIMD)"


def test_jsimd_forcenone_is_reported_as_off_when_simd_is_built() -> None:
    facts = _doctor_json({"JSIMD_FORCENONE": "1"})
    assert facts["JPEG SIMD"].startswith("off (")
    expected = ("JSIMD_FORCENONE=1" if dict(_core.build_info())["jpeg_simd_built"] == "true"
                else "built without SIMD")
    assert expected in facts["JPEG SIMD"]


def test_doctor_table_names_a_missing_simd_build_and_its_fix() -> None:
    result = CliRunner().invoke(main, ["doctor"])
    assert "libjpeg-turbo" in result.output and "JPEG SIMD" in result.output
    if dict(_core.build_info())["jpeg_simd_built"] == "true":
        assert result.exit_code == 0 or "resize SIMD" in result.output
    else:
        assert result.exit_code == 1
        assert "install nasm" in result.output


def test_version_names_the_build() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("artpipe ")
    assert "libjpeg-turbo " in result.output and "JPEG SIMD " in result.output


def test_build_info_is_plain_name_value_pairs() -> None:
    info = _core.build_info()
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in info)
    assert {name for name, _ in info} >= {"libjpeg_turbo", "jpeg_simd_built", "jpeg_simd",
                                          "resize_cpu", "max_pixels"}
    assert dict(info)["max_pixels"] == str(_core.MAX_PIXELS)


def test_a_build_without_simd_says_so_after_the_demo(capsys) -> None:  # type: ignore[no-untyped-def]
    from artpipe import cli

    cli._note_slow_build()
    note = capsys.readouterr().err
    if dict(_core.build_info())["jpeg_simd_built"] == "true":
        assert note == ""
    else:
        assert "without libjpeg-turbo's SIMD" in note and "artpipe doctor" in note
