"""What a source build without nasm costs: artpipe's render chains with and without SIMD.

A bare machine (Python + Rust, no nasm) builds libjpeg-turbo's C paths; a release wheel has
its SIMD. This measures both on the same chains as bench/peers/compare.py, interleaved in one
run, each configuration in its own child interpreter (the timing happens in the child, CPU
time per image, median of ``--repeat`` calls after warm-ups):

  wheel       a release wheel (scripts/build-wheels.sh) installed in a venv: SIMD on
  forcenone   the same wheel with JSIMD_FORCENONE=1: libjpeg-turbo's C paths, same binary
  no-nasm     a source build made without nasm (`pip install .` on a bare machine)

Usage: python bench/simd_fallback.py --wheel-python V1/bin/python --source-python V2/bin/python
(inputs are generated with Pillow by the interpreter running this script).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from chains import CHAINS, make_inputs  # noqa: E402

JPEG_CHAINS = ("poster", "fanart4k", "fanart", "decode")

CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
import artpipe
from artpipe import _core
directory, repeat = Path(sys.argv[1]), int(sys.argv[2])
chains = json.loads(sys.argv[3])
out = {"simd": dict(_core.build_info())["jpeg_simd"]}
for name, source, size, decode in chains:
    data = (directory / source).read_bytes()
    call = ((lambda: artpipe.decode(data)) if decode else
            (lambda: artpipe.render(data, max_size=tuple(size), format="jpeg")))
    for _ in range(2):
        call()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        call()
        times.append((time.process_time() - start) * 1000)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""


def measure(python: str, env: dict[str, str], inputs: Path, repeat: int) -> dict[str, object]:
    chains = [(n, CHAINS[n].source, CHAINS[n].size, n == "decode") for n in JPEG_CHAINS]
    result = subprocess.run(
        [python, "-c", CHILD, str(inputs), str(repeat), json.dumps(chains)],
        capture_output=True, text=True, check=True, env={**os.environ, **env}, cwd="/",
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-python", required=True)
    parser.add_argument("--source-python", required=True)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    inputs = HERE / "out" / "core-inputs"
    if not (inputs / "poster.jpg").exists():
        inputs.mkdir(parents=True, exist_ok=True)
        make_inputs(inputs)
    configs = {
        "wheel": (args.wheel_python, {"JSIMD_FORCENONE": "0"}),
        "forcenone": (args.wheel_python, {"JSIMD_FORCENONE": "1"}),
        "no-nasm": (args.source_python, {}),
    }
    best: dict[str, dict[str, float]] = {name: {} for name in configs}
    labels: dict[str, str] = {}
    for _ in range(args.rounds):  # interleaved rounds; keep each chain's best median
        for name, (python, env) in configs.items():
            got = measure(python, env, inputs, args.repeat)
            labels[name] = str(got.pop("simd"))
            for chain, ms in got.items():
                assert isinstance(ms, float)
                best[name][chain] = min(best[name].get(chain, ms), ms)

    print("| chain | wheel (SIMD " + labels["wheel"] + ") CPU ms | JSIMD_FORCENONE CPU ms "
          "| no-nasm source build CPU ms | forcenone / wheel | no-nasm / wheel |")
    print("|---|---|---|---|---|---|")
    for chain in JPEG_CHAINS:
        w, f, s = best["wheel"][chain], best["forcenone"][chain], best["no-nasm"][chain]
        print(f"| {CHAINS[chain].title} | {w:.1f} | {f:.1f} | {s:.1f} | {f / w:.2f}× | "
              f"{s / w:.2f}× |")
    print(f"\nchild labels: {labels}")


if __name__ == "__main__":
    main()
