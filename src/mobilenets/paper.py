"""The paper's published complexity figures, stored once as data, and their comparison with `complexity.py`.

Howard et al. 2017, arXiv 1704.04861v1: Tables 1-10 and Figures 4-5. Published values are copied as printed
(mult-adds and parameters in millions). Where the printed value cannot be reproduced by any consistent count, the
row carries a ``misprint`` note saying why; such rows are reported, never silently "fixed".
Published ImageNet top-1 accuracies are kept beside the cost rows for reference; they cannot be computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .complexity import LAYER_TYPES, TYPE_FC, count_complexity, layer_macs, layer_weights
from .mobilenet_v1 import LayerDef
from .registry import PAPER_ALPHAS, PAPER_RESOLUTIONS
from .spec import ModelSpec

MACS, PARAMS = "mult_adds_M", "params_M"
MACS_SHARE, PARAMS_SHARE = "mult_adds_share_pct", "params_share_pct"
TABLES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "fig4-5")


@dataclass(frozen=True)
class Published:
    table: str
    row: str
    quantity: str
    value: float | str | None  # None: the paper prints no number (Figures 4-5)
    decimals: int = 0
    misprint: str = ""  # why the printed value differs from every consistent count


# Table 1, "MobileNet Body Architecture": (Type / Stride, Filter Shape, Input Size). The "5x" rows are expanded.
TABLE1 = [
    ("Conv / s2", "3 x 3 x 3 x 32", "224 x 224 x 3"),
    ("Conv dw / s1", "3 x 3 x 32 dw", "112 x 112 x 32"),
    ("Conv / s1", "1 x 1 x 32 x 64", "112 x 112 x 32"),
    ("Conv dw / s2", "3 x 3 x 64 dw", "112 x 112 x 64"),
    ("Conv / s1", "1 x 1 x 64 x 128", "56 x 56 x 64"),
    ("Conv dw / s1", "3 x 3 x 128 dw", "56 x 56 x 128"),
    ("Conv / s1", "1 x 1 x 128 x 128", "56 x 56 x 128"),
    ("Conv dw / s2", "3 x 3 x 128 dw", "56 x 56 x 128"),
    ("Conv / s1", "1 x 1 x 128 x 256", "28 x 28 x 128"),
    ("Conv dw / s1", "3 x 3 x 256 dw", "28 x 28 x 256"),
    ("Conv / s1", "1 x 1 x 256 x 256", "28 x 28 x 256"),
    ("Conv dw / s2", "3 x 3 x 256 dw", "28 x 28 x 256"),
    ("Conv / s1", "1 x 1 x 256 x 512", "14 x 14 x 256"),
    *[("Conv dw / s1", "3 x 3 x 512 dw", "14 x 14 x 512"), ("Conv / s1", "1 x 1 x 512 x 512", "14 x 14 x 512")] * 5,
    ("Conv dw / s2", "3 x 3 x 512 dw", "14 x 14 x 512"),
    ("Conv / s1", "1 x 1 x 512 x 1024", "7 x 7 x 512"),
    ("Conv dw / s2", "3 x 3 x 1024 dw", "7 x 7 x 1024"),
    ("Conv / s1", "1 x 1 x 1024 x 1024", "7 x 7 x 1024"),
    ("Avg Pool / s1", "Pool 7 x 7", "7 x 7 x 1024"),
    ("FC / s1", "1024 x 1000", "1 x 1 x 1024"),
    ("Softmax / s1", "Classifier", "1 x 1 x 1000"),
]
TABLE1_LAST_DW = 25  # index of the printed "Conv dw / s2" on a 7x7 input
TABLE1_STRIDE_NOTE = (
    "printed s2, but its input is 7x7 and the next rows are 7x7 too; TF-slim, Keras and timm use s1 (as we do)"
)

# Table 3: one layer, D_K = 3, M = N = 512, D_F = 14; then alpha = 0.75; then rho = 0.714 (D_F = 10).
TABLE3 = {
    "Convolution": (462, 2.36),
    "Depthwise Separable Conv": (52.3, 0.27),
    "alpha = 0.75": (29.6, 0.15),
    "rho = 0.714": (15.1, 0.15),
}

# Model rows of Tables 4-10: row label -> (ModelSpec kwargs, published Mult-Adds M, published params M,
# published ImageNet top-1 %). Decimals follow the printing.
FC_NOTE = (
    "printed value is what the count gives without the 1000-way FC layer ({without_fc:.1f}M; {with_fc:.1f}M with "
    "it, and the paper counts the FC everywhere else, e.g. 569M for 1.0-224){tfslim}"
)
MODEL_ROWS: dict[str, list[tuple[str, dict, float, float, float, str]]] = {
    "4": [
        ("Conv MobileNet", dict(variant="conv"), 4866, 29.3, 71.7, "macs:fc"),
        ("MobileNet", dict(), 569, 4.2, 70.6, ""),
    ],
    "5": [
        ("0.75 MobileNet", dict(alpha=0.75), 325, 2.6, 68.4, ""),
        ("Shallow MobileNet", dict(variant="shallow"), 307, 2.9, 65.3, ""),
    ],
    "6": [
        ("1.0 MobileNet-224", dict(alpha=1.0), 569, 4.2, 70.6, ""),
        ("0.75 MobileNet-224", dict(alpha=0.75), 325, 2.6, 68.4, ""),
        ("0.5 MobileNet-224", dict(alpha=0.5), 149, 1.3, 63.7, ""),
        ("0.25 MobileNet-224", dict(alpha=0.25), 41, 0.5, 50.6, ""),
    ],
    "7": [
        ("1.0 MobileNet-224", dict(resolution=224), 569, 4.2, 70.6, ""),
        ("1.0 MobileNet-192", dict(resolution=192), 418, 4.2, 69.1, ""),
        ("1.0 MobileNet-160", dict(resolution=160), 290, 4.2, 67.2, "macs:fc"),
        ("1.0 MobileNet-128", dict(resolution=128), 186, 4.2, 64.4, ""),
    ],
    "8": [("1.0 MobileNet-224", dict(), 569, 4.2, 70.6, "")],
    "9": [("0.50 MobileNet-160", dict(alpha=0.5, resolution=160), 76, 1.32, 60.2, "macs:fc")],
    # Table 10 (Stanford Dogs): parameters of a 120-class head; mult-adds as for the 1000-class models.
    "10": [
        ("1.0 MobileNet-224", dict(), 569, 3.3, 83.3, "dogs"),
        ("0.75 MobileNet-224", dict(alpha=0.75), 325, 1.9, 81.9, "dogs"),
        ("1.0 MobileNet-192", dict(resolution=192), 418, 3.3, 81.9, "dogs"),
        ("0.75 MobileNet-192", dict(alpha=0.75, resolution=192), 239, 1.9, 80.5, "dogs"),
    ],
}
TFSLIM_PRINTS = {
    "1.0 MobileNet-160": "; TF-slim's table prints 291M",
    "0.50 MobileNet-160": "; TF-slim's table prints 77M",
}

# TF-slim's released float ImageNet checkpoints (tensorflow/models research/slim/nets/mobilenet_v1.md, 2018_02_22):
# (alpha, resolution) -> (Million MACs, Million Parameters, top-1 %, top-5 %), as printed there. Note its MACs for
# alpha 0.75 (317, 233, 162, 104) and 0.25-192 (34) differ from the paper's count and ours (325, 239, 166, 107; 30).
TFSLIM_IMAGENET = {
    (1.0, 224): (569, 4.24, 70.9, 89.9), (1.0, 192): (418, 4.24, 70.0, 89.2),
    (1.0, 160): (291, 4.24, 68.0, 87.7), (1.0, 128): (186, 4.24, 65.2, 85.8),
    (0.75, 224): (317, 2.59, 68.4, 88.2), (0.75, 192): (233, 2.59, 67.2, 87.3),
    (0.75, 160): (162, 2.59, 65.3, 86.0), (0.75, 128): (104, 2.59, 62.1, 83.9),
    (0.5, 224): (150, 1.34, 63.3, 84.9), (0.5, 192): (110, 1.34, 61.7, 83.6),
    (0.5, 160): (77, 1.34, 59.1, 81.9), (0.5, 128): (49, 1.34, 56.3, 79.4),
    (0.25, 224): (41, 0.47, 49.8, 74.2), (0.25, 192): (34, 0.47, 47.7, 72.3),
    (0.25, 160): (21, 0.47, 45.5, 70.3), (0.25, 128): (14, 0.47, 41.5, 66.3),
}  # fmt: skip

# Table 2, "Resource Per Layer Type" (1.0 MobileNet-224): type -> (Mult-Adds %, Parameters %).
TABLE2 = {
    "Conv 1x1": (94.86, 74.59),
    "Conv DW 3x3": (3.06, 1.06),
    "Conv 3x3": (1.19, 0.02),
    "Fully Connected": (0.18, 24.33),
}
TABLE2_MISPRINT = (
    "printed 1.19; the four printed mult-add shares sum to 100% only with 1.91 (digits transposed), "
    "and the count gives 1.91"
)


def printed_name(alpha: float, resolution: int | None = None) -> str:
    """A model as the paper's tables print it: "1.0 MobileNet-224", "0.75 MobileNet-192", and without a resolution
    "0.75 MobileNet" (Table 5). The multiplier keeps at least one decimal (Tables 6, 7 and 10 print 1.0, not 1);
    Table 9's lone "0.50" is kept as printed in `MODEL_ROWS`, not made a rule."""
    text = f"{alpha:g}"
    text = text if "." in text else f"{text}.0"
    return f"{text} MobileNet" + (f"-{resolution}" if resolution is not None else "")


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


def published_rows() -> list[Published]:
    """Every published complexity figure, with its table, row and precision."""
    rows = []
    for i, (ts, shape, size) in enumerate(TABLE1):
        note = TABLE1_STRIDE_NOTE if i == TABLE1_LAST_DW else ""
        rows += [
            Published("1", str(i + 1), "type_stride", ts, 0, note),
            Published("1", str(i + 1), "filter_shape", shape),
            Published("1", str(i + 1), "input_size", size),
        ]
    for kind, (macs, params) in TABLE2.items():
        rows.append(Published("2", kind, MACS_SHARE, macs, 2, TABLE2_MISPRINT if kind == "Conv 3x3" else ""))
        rows.append(Published("2", kind, PARAMS_SHARE, params, 2))
    for label, (macs, params) in TABLE3.items():
        rows += [Published("3", label, MACS, macs, _decimals(macs)), Published("3", label, PARAMS, params, 2)]
    for table, models in MODEL_ROWS.items():
        for label, _kw, macs, params, _top1, flag in models:
            note = ""
            if flag == "macs:fc":
                cost = model_complexity(table, label)
                fc = sum(r.macs for r in cost.layers if r.layer_type == TYPE_FC)
                note = FC_NOTE.format(
                    without_fc=(cost.macs - fc) / 1e6, with_fc=cost.macs / 1e6, tfslim=TFSLIM_PRINTS.get(label, "")
                )
            rows.append(Published(table, label, MACS, macs, _decimals(macs), note))
            rows.append(Published(table, label, PARAMS, params, _decimals(params)))
    for alpha in PAPER_ALPHAS:
        for res in PAPER_RESOLUTIONS:
            label = printed_name(alpha, res)
            rows += [Published("fig4-5", label, MACS, None, 0), Published("fig4-5", label, PARAMS, None, 2)]
    return rows


def model_complexity(table: str, label: str, *, for_params: bool = False):
    """The cost of a model row. Table 10's parameters are counted with a 120-class (Stanford Dogs) head."""
    if table == "fig4-5":
        alpha, res = label.split(" MobileNet-")
        return count_complexity(ModelSpec(alpha=float(alpha), resolution=int(res)))
    kwargs = next(kw for lab, kw, *_ in MODEL_ROWS[table] if lab == label)
    if table == "10" and for_params:
        kwargs = {**kwargs, "num_classes": 120}
    return count_complexity(ModelSpec(**kwargs))


def _table1_computed() -> list[tuple[str, str, str]]:
    cost = count_complexity(ModelSpec())
    return [(r.type_stride, r.filter_shape, r.input_size) for r in cost.layers]


def _table3_computed() -> dict[str, tuple[float, float]]:
    def one(kind: str, ch: int, df: int) -> tuple[float, float]:
        if kind == "conv":
            layers = [LayerDef("conv", "conv", ch, ch, 3)]
        else:
            layers = [LayerDef("dw", "dw", ch, ch, 3, groups=ch), LayerDef("pw", "pw", ch, ch, 1)]
        return (sum(layer_macs(x, df, df) for x in layers) / 1e6, sum(layer_weights(x) for x in layers) / 1e6)

    reduced = round(14 * 0.714)  # rho = 0.714 maps the 14x14 feature map to 10x10
    return {
        "Convolution": one("conv", 512, 14),
        "Depthwise Separable Conv": one("dws", 512, 14),
        "alpha = 0.75": one("dws", round(512 * 0.75), 14),
        "rho = 0.714": one("dws", round(512 * 0.75), reduced),
    }


def computed_value(row: Published, cache: dict) -> float | str:
    if row.table == "1":
        if "t1" not in cache:
            cache["t1"] = _table1_computed()
        col = ("type_stride", "filter_shape", "input_size").index(row.quantity)
        return cache["t1"][int(row.row) - 1][col]
    if row.table == "2":
        if "t2" not in cache:
            cache["t2"] = count_complexity(ModelSpec()).shares()
        return cache["t2"][row.row]["macs_pct" if row.quantity == MACS_SHARE else "params_pct"]
    if row.table == "3":
        if "t3" not in cache:
            cache["t3"] = _table3_computed()
        return cache["t3"][row.row][0 if row.quantity == MACS else 1]
    cost = model_complexity(row.table, row.row, for_params=row.quantity == PARAMS)
    return (cost.macs if row.quantity == MACS else cost.params) / 1e6


def compare() -> list[dict]:
    """Each published figure beside the computed one, at the paper's printed precision.

    ``status``: 'match' (equal at the printed precision), 'misprint' (differs, and the row's note says why),
    'computed' (the paper prints no number), or 'MISMATCH' (differs with no explanation: a bug here or there).
    ``decimals``: that printed precision (`as_printed` shows the numbers with it).
    """
    cache: dict = {}
    out = []
    for row in published_rows():
        value = computed_value(row, cache)
        shown = value if isinstance(value, str) else round(value, row.decimals) if row.decimals else round(value)
        if row.value is None:
            status, diff = "computed", None
        elif isinstance(value, str):
            status, diff = ("match" if value == row.value else "misprint" if row.misprint else "MISMATCH"), None
        else:
            diff = round(shown - row.value, row.decimals + 2)
            status = "match" if shown == row.value else "misprint" if row.misprint else "MISMATCH"
        if status == "match" and row.misprint:
            status = "MISMATCH"  # a recorded misprint that we reproduce means our note is wrong
        out.append(
            {
                "table": row.table,
                "row": row.row,
                "quantity": row.quantity,
                "published": row.value,
                "computed": shown,
                "difference": diff,
                "status": status,
                "note": row.misprint,
                "decimals": row.decimals,
            }
        )
    return out


def as_printed(row: dict) -> dict:
    """A `compare` row for a text table: its numbers with the decimals the paper prints them with (Table 4's 29.3,
    not 29.30: a table renderer's two decimals misquote the paper and hide the precision the status is judged at)."""

    def text(value):
        return f"{value:,.{row['decimals']}f}" if isinstance(value, int | float) else value

    return {**row, **{key: text(row[key]) for key in ("published", "computed", "difference")}}


def published_top1() -> dict[tuple[float, int, str], float]:
    """Published ImageNet top-1 (%) of the paper's model rows, keyed by (alpha, resolution, variant)."""
    out = {}
    for table, models in MODEL_ROWS.items():
        if table == "10":
            continue  # Stanford Dogs, not ImageNet
        for _label, kw, _m, _p, top1, _f in models:
            spec = ModelSpec(**kw)
            out[(spec.alpha, spec.resolution, spec.variant)] = top1
    return out


__all__ = [
    "TABLES",
    "TFSLIM_IMAGENET",
    "as_printed",
    "compare",
    "printed_name",
    "published_rows",
    "published_top1",
    "LAYER_TYPES",
]
