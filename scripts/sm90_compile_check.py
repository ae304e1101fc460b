"""Compile every Triton kernel configuration of the project for an H100/H200 (sm_90) on a machine without a GPU.

The interpreter (TRITON_INTERPRET=1, what CI runs) checks the kernels' numerics but never compiles them, so a config
that needs more shared memory than the GPU has, or spills registers, shows up only on the GPU, in minutes of device
time. This compiles each one ahead of time with Triton's own compiler and the ptxas it bundles, then reads the
compiled kernel's registers, stack, spills and shared memory with the bundled cuobjdump. Nothing is launched.

    python scripts/sm90_compile_check.py [--dtypes bf16,fp32] [--kernels fused,...,dgrad_s2] [--json OUT]

Exit status 1 if a config fails to compile, or if a training kernel (dwconv, one fixed config) needs more shared
memory than one sm_90 block may have. A tuned config (fused, split, rows, stem) that is too big is reported: the
tuner skips a candidate that fails at launch. Register spills are reported, not failed. Uses Triton internals
(triton.compile on an ASTSource for a GPUTarget), checked against Triton 3.8.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: compile, do not interpret

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from mobilenets import dwconv, kernels  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
SHARED_LIMIT = 232448  # bytes of shared memory one block may use on sm_90 (227 KB)
GEOMETRY = ("M", "H", "W", "C", "OH", "OW", "PAD_T", "PAD_L")


NVIDIA_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def cuobjdump() -> str:
    return os.path.join(NVIDIA_BIN, "cuobjdump")


def compile_one(fn, pointers: dict, ints: tuple, constexprs: dict, options: dict) -> dict:
    """Compile ``fn`` for sm_90; pointers aligned to 16 bytes and C divisible by 16, as at run time for our layers."""
    names = fn.arg_names
    types = {**pointers, **dict.fromkeys(ints, "i32")}
    signature = {n: "constexpr" if n in constexprs else types[n] for n in names}
    aligned = [*pointers, "C"]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned if n in names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=TARGET, options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump(), "-res-usage", f.name], capture_output=True, text=True).stdout
    ptx = compiled.asm["ptx"]
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line: {usage[-300:]!r}")
    regs, stack, _static_shared, local = (int(v) for v in found.groups())
    return {
        "registers": regs,
        "stack_bytes": stack,
        "local_bytes": local,
        "shared_bytes": compiled.metadata.shared,
        "tensor_cores": next((op for op in ("wgmma", "mma.sync") if op in ptx), None),
    }


def cases(dtypes: list[str], which: set[str]):
    """(name, kernel, pointer types, int args, constexprs, options) for every config the code can launch."""
    for dt in dtypes:
        p = "*" + dt
        if "fused" in which:
            ptrs = dict.fromkeys(("x_ptr", "wdw_ptr", "bdw_ptr", "wpw_ptr", "bpw_ptr", "y_ptr"), p)
            for bm, bk, bn, warps, stages in kernels.FUSED_CONFIGS:
                for stride in (1, 2):
                    ce = dict(STRIDE=stride, DIL=1, ACT=1, IEEE=dt == "fp32", BM=bm, BK=bk, BN=bn)
                    yield (f"fused {dt} {(bm, bk, bn, warps, stages)} s{stride}", kernels._dwpw_kernel, ptrs,
                           (*GEOMETRY, "COUT"), ce, dict(num_warps=warps, num_stages=stages))  # fmt: skip
        if "split" in which:
            ptrs = dict.fromkeys(("x_ptr", "w_ptr", "b_ptr", "y_ptr"), p)
            for cfg in kernels.SPLIT_CONFIGS:
                bm, bc, warps, tw = (*cfg, 0)[:4]  # TW: 0 (BM consecutive pixels) unless given
                for stride in (1, 2):
                    ce = dict(STRIDE=stride, DIL=1, ACT=1, BM=bm, BC=bc, TW=tw)
                    yield (f"split-dw {dt} {cfg} s{stride}", kernels._dw_kernel, ptrs, GEOMETRY, ce,
                           dict(num_warps=warps))  # fmt: skip
        if "rows" in which:  # the split plan's row-reuse depthwise kernel (stride 1)
            ptrs = dict.fromkeys(("x_ptr", "w_ptr", "b_ptr", "y_ptr"), p)
            ints = ("H", "W", "C", "OH", "OW", "PAD_T", "PAD_L")
            for rows, cols, bc, warps in kernels.ROWS_CONFIGS:
                ce = dict(ACT=1, TH=rows, TW=cols, BC=bc)
                yield (
                    f"rows-dw {dt} {(rows, cols, bc, warps)}",
                    kernels._dw_rows_kernel,
                    ptrs,
                    ints,
                    ce,
                    dict(num_warps=warps),
                )
        if "stem" in which:  # the first layer, reading the fp32 NCHW images that inference is given
            ptrs = {"x_ptr": "*fp32", "w_ptr": p, "b_ptr": p, "y_ptr": p}
            ints = ("M", "H", "W", "OH", "OW", "PAD_T", "PAD_L", "SN", "SC", "SH", "SW", "COUT")
            for bm, warps in kernels.STEM_CONFIGS:
                ce = dict(CIN=3, STRIDE=2, ACT=1, BM=bm, BN=32, BK=32, IEEE=dt == "fp32")
                yield f"stem {dt} {(bm, warps)}", kernels._stem_kernel, ptrs, ints, ce, dict(num_warps=warps)
        if "dwconv" in which:  # the training op: forward (act none), input and weight gradients, each block width
            for bc in sorted({dwconv._block_c(c) for c in (16, 32, 64, 1024)}):
                for stride in (1, 2):
                    opts = dict(num_warps=dwconv.WARPS)
                    fwd = dict.fromkeys(("x_ptr", "w_ptr", "b_ptr", "y_ptr"), p)
                    ce = dict(STRIDE=stride, DIL=1, ACT=0, BM=dwconv.BM, BC=bc, TW=0)
                    yield f"dwconv-fwd {dt} bc{bc} s{stride}", kernels._dw_kernel, fwd, GEOMETRY, ce, opts
                    dgrad = dict.fromkeys(("g_ptr", "w_ptr", "dx_ptr"), p)
                    ce = dict(STRIDE=stride, DIL=1, BM=dwconv.BM, BC=bc)
                    yield f"dwconv-dgrad {dt} bc{bc} s{stride}", dwconv._dgrad_kernel, dgrad, GEOMETRY, ce, opts
                    wgrad = {"x_ptr": p, "g_ptr": p, "part_ptr": "*fp32"}
                    ce = dict(STRIDE=stride, DIL=1, BM=dwconv.BM_W, BC=bc)
                    yield (f"dwconv-wgrad {dt} bc{bc} s{stride}", dwconv._wgrad_kernel, wgrad, (*GEOMETRY, "STEPS"),
                           ce, opts)  # fmt: skip
        if "dgrad_s2" in which:  # the stride-2 input gradient's tuned configs, PyTorch's padding and SAME's (0, 0)
            ptrs = dict.fromkeys(("g_ptr", "w_ptr", "dx_ptr"), p)
            ints = ("Q", "H", "W", "C", "OH", "OW", "RH", "RW")
            for bq, bc, warps in dwconv.DGRAD_S2_CONFIGS:
                for pad in (1, 0):
                    ce = dict(PAD_T=pad, PAD_L=pad, BQ=bq, BC=bc)
                    yield (f"dgrad-s2 {dt} {(bq, bc, warps)} pad{pad}", dwconv._dgrad_s2_kernel, ptrs, ints, ce,
                           dict(num_warps=warps))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="bf16,fp32", help="comma-separated: bf16, fp16, fp32")
    parser.add_argument(
        "--kernels",
        default="fused,split,rows,stem,dwconv,dgrad_s2",
        help="comma-separated: fused, split, rows, stem, dwconv, dgrad_s2",
    )
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()
    if kernels.triton is None:
        sys.exit("triton is not installed")
    missing = [tool for tool in ("ptxas", "cuobjdump") if not os.path.isfile(os.path.join(NVIDIA_BIN, tool))]
    if missing:
        sys.exit(f"this triton wheel lacks the CUDA tools {', '.join(missing)} (looked in {NVIDIA_BIN})")
    rows, failed = [], 0
    for name, fn, ptrs, ints, ce, opts in cases(args.dtypes.split(","), set(args.kernels.split(","))):
        try:
            row = {"config": name, **compile_one(fn, ptrs, ints, ce, opts)}
            row["fits"] = row["shared_bytes"] <= SHARED_LIMIT
            failed += not row["fits"] and name.startswith("dwconv")
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is the finding
            row = {"config": name, "error": repr(exc)[:400]}
            failed += 1
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            command = " ".join(["python", "scripts/sm90_compile_check.py", *sys.argv[1:]])
            head = {"target": "sm_90", "triton": triton.__version__, "shared_limit_bytes": SHARED_LIMIT}
            json.dump({**head, "command": command, "rows": rows}, f, indent=1)
    spills = [r["config"] for r in rows if r.get("stack_bytes") or r.get("local_bytes")]
    too_big = [r["config"] for r in rows if r.get("fits") is False]
    print(f"{len(rows)} configs, {failed} failed; too big for sm_90 shared memory: {too_big or 'none'}")
    print(f"spilling registers: {spills or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
