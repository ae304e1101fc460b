"""Decoding a dataset once (issues 4, 7, 8): images/s of `device_data.load_to_device` against a plain thread pool.

Both decode the same files (libjpeg-turbo via `preprocess.read_image`, antialiased resize of the shorter side to
``--side``, center crop) into one uint8 tensor on the CPU. ``library`` is `load_to_device`, which decodes through
`preprocess.decode_all` (torch's intra-op pool at one thread while its threads run); ``plain_pool`` is the same work
in a ``ThreadPoolExecutor`` with torch's thread count left as it is (what the library did before). They alternate
(library, plain, library, plain, ...) in one process, for each pool size in ``--threads``; medians go to
results/decode-<cpu>-<cores>c.json with the command, versions and hardware. With CUDA two more alternate with them:
``library_cuda`` (the same decode, then the copy to the GPU, as `--data-on-device` runs it) and ``nvjpeg``
(``decode_on_device``: baseline JPEGs decoded and resized on the GPU in batches, `--gpu-decode`).

    flock /tmp/mobilenets-cpu.lock python benchmarks/decode.py --threads 2 16   # this machine
    python3 benchmarks/decode.py --data /tmp/data --threads 16                   # a 16-core GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torchvision
from torchvision.transforms import InterpolationMode, v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mobilenets.atomic import atomic_write_text  # noqa: E402
from mobilenets.bench import cpu_model  # noqa: E402
from mobilenets.data import scan_split, shared_data_root  # noqa: E402
from mobilenets.device_data import load_to_device  # noqa: E402
from mobilenets.preprocess import read_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def plain_pool(samples: list[tuple[str, int]], side: int, threads: int) -> torch.Tensor:
    """The decode loop of `load_to_device`, in a thread pool, with torch's intra-op threads as they are."""
    resize = v2.Compose(
        [v2.Resize(side, interpolation=InterpolationMode.BILINEAR, antialias=True), v2.CenterCrop(side)]
    )
    out = torch.empty((len(samples), 3, side, side), dtype=torch.uint8)

    def load(i: int) -> None:
        out[i] = resize(read_image(samples[i][0]))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(load, range(len(samples))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data_root() / "imagenette"), help="a folder with train/<class>/*")
    p.add_argument("--split", default="train")
    p.add_argument("--images", type=int, default=1500, help="the first N files of the split (0 = all)")
    p.add_argument("--side", type=int, default=182, help="stored square side (160 / 0.875 = 182)")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 16], help="decode pool sizes to compare")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON path (default results/decode-<cpu>-<cores>c.json)")
    args = p.parse_args(argv)
    split = Path(args.data) / args.split
    if not split.is_dir():
        p.error(f"--data {args.data}: no {args.split}/ folder there")
    samples = scan_split(split).samples
    samples = samples[: args.images] if args.images else samples
    cores = len(os.sched_getaffinity(0))
    intra = torch.get_num_threads()
    rows = []
    report = {
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]),
        "cpu": cpu_model(),
        "cores": cores,
        "torch_intra_op_threads": intra,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "side": args.side,
        "data": str(split),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "note": "median of --rounds per pool size, after one untimed call of each path; the paths alternate in one "
        "process",
        "rows": rows,
    }
    hw = cpu_model().replace(" ", "-").lower()
    out = Path(args.out) if args.out else REPO / "results" / f"decode-{hw}-{cores}c.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for threads in args.threads:
        times: dict[str, list[float]] = {"library": [], "plain_pool": []}
        if torch.cuda.is_available():
            times |= {"library_cuda": [], "nvjpeg": []}
        for r in range(-1, args.rounds):  # round -1: one untimed call of each path (CUDA context, nvjpeg start-up)
            for name in times:
                t = time.perf_counter()
                if name == "plain_pool":
                    plain_pool(samples, args.side, threads)
                else:
                    device = "cpu" if name == "library" else "cuda"
                    load_to_device(samples, args.side, device, threads=threads, keep=False,
                                   decode_on_device=name == "nvjpeg")  # fmt: skip
                if r < 0:
                    continue
                times[name].append(time.perf_counter() - t)
                rate = len(samples) / times[name][-1]
                print(f"threads={threads} round {r + 1} {name}: {rate:,.0f} img/s", flush=True)
        row = {"threads": threads, "images": len(samples)}
        for name, v in times.items():
            row[f"{name}_images_per_s"] = round(len(samples) / statistics.median(v), 1)
            row[f"{name}_s"] = [round(x, 3) for x in v]
        row["library_over_plain"] = round(row["library_images_per_s"] / row["plain_pool_images_per_s"], 3)
        if "nvjpeg" in times:
            row["nvjpeg_over_library_cuda"] = round(row["nvjpeg_images_per_s"] / row["library_cuda_images_per_s"], 3)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_s")}), flush=True)
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")  # after each pool size: a timeout keeps them
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
