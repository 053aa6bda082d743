"""COCO run-length encoding (RLE) in numpy, bit-compatible with pycocotools.

pycocotools is not installable on these machines, yet our numbers must be the
ones pycocotools would print for the same files (they are compared with the
published HTC results). So every function here follows the C code of
pycocotools' ``common/maskApi.c`` step by step, including its rounding and
its quirks; the comments name the C function each one mirrors.

Forms of a segmentation that are accepted wherever ``segm`` appears:
  * compressed RLE  ``{"size": [h, w], "counts": "<string>"}`` (str or bytes),
  * uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}``,
  * polygons ``[[x0, y0, x1, y1, ...], ...]`` (rasterised like ``rleFrPoly``).

Run lengths are over the mask in column-major (Fortran) order and always start
with a run of zeros, which may be empty.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "encode",
    "encode_counts",
    "decode",
    "counts_to_string",
    "string_to_counts",
    "area",
    "to_bbox",
    "fr_poly",
    "fr_bbox",
    "fr_segmentation",
    "merge",
    "iou",
    "box_iou",
]


# --------------------------------------------------------------------------
# counts <-> mask


def encode_counts(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a 2-D binary mask (rleEncode). Returns int64 counts."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode: mask must be 2-D [H,W], got shape {mask.shape}")
    flat = mask.ravel(order="F") != 0
    n = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    counts = np.diff(bounds)
    if n and flat[0]:
        counts = np.concatenate(([0], counts))
    return counts.astype(np.int64)


def counts_to_string(counts: Sequence[int]) -> str:
    """Compress counts to pycocotools' string form (rleToString).

    Each count from the fourth on is stored as the difference to the count two
    places before it (runs of the same kind have similar lengths), then written
    like signed LEB128 but with 5 payload bits per character, bit 0x20 meaning
    "more follows", offset into printable ASCII by 48.
    """
    out = []
    counts = [int(c) for c in counts]
    for i, c in enumerate(counts):
        x = c
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # Python's >> is arithmetic, like the C code's on `long`
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str | bytes) -> np.ndarray:
    """Inverse of :func:`counts_to_string` (rleFrString)."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    n = len(s)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("RLE string ends inside a count")
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                raise ValueError(f"RLE string has an invalid character {s[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return np.asarray(counts, dtype=np.int64)


def _counts_and_size(segm, h: int | None = None, w: int | None = None):
    """(counts int64, h, w) of an RLE dict; polygons need h and w."""
    if isinstance(segm, dict):
        if "size" not in segm or "counts" not in segm:
            raise ValueError("RLE dict needs 'size' and 'counts'")
        rh, rw = (int(v) for v in segm["size"])
        counts = segm["counts"]
        if isinstance(counts, (str, bytes, bytearray)):
            c = string_to_counts(counts)
        else:
            c = np.asarray(counts, dtype=np.int64).reshape(-1)
        return c, rh, rw
    if h is None or w is None:
        raise ValueError("polygon segmentation needs the image height and width")
    rle = fr_segmentation(segm, h, w)
    return string_to_counts(rle["counts"]), int(h), int(w)


def encode(mask: np.ndarray) -> dict:
    """Compressed RLE of a binary mask [H,W]: {"size": [h, w], "counts": str}."""
    mask = np.asarray(mask)
    counts = encode_counts(mask)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(counts)}


def decode(segm, h: int | None = None, w: int | None = None) -> np.ndarray:
    """Binary mask uint8 [H,W] of any accepted segmentation form (rleDecode)."""
    counts, h, w = _counts_and_size(segm, h, w)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected h*w = {h * w}")
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def area(segm, h: int | None = None, w: int | None = None) -> int:
    """Number of foreground pixels (rleArea)."""
    counts, _, _ = _counts_and_size(segm, h, w)
    return int(counts[1::2].sum())


def _bbox_from_counts(counts: np.ndarray, h: int, w: int) -> np.ndarray:
    # rleToBbox: only complete (zeros, ones) pairs count; a run of ones that
    # wraps from one column into a later one spans the full height.
    m = (len(counts) // 2) * 2
    if m == 0 or h == 0:
        return np.zeros(4, dtype=np.float64)
    cc = np.cumsum(counts[:m])
    j = np.arange(m)
    t = cc - (j % 2)
    y = t % h
    x = t // h
    xs = min(int(w), int(x.min()))
    xe = max(0, int(x.max()))
    ys = min(int(h), int(y.min()))
    ye = max(0, int(y.max()))
    if np.any(x[0::2] < x[1::2]):
        ys, ye = 0, h - 1
    return np.array([xs, ys, xe - xs + 1, ye - ys + 1], dtype=np.float64)


def to_bbox(segm, h: int | None = None, w: int | None = None) -> np.ndarray:
    """Bounding box [x, y, w, h] (float64) of a segmentation (rleToBbox)."""
    counts, h, w = _counts_and_size(segm, h, w)
    return _bbox_from_counts(counts, h, w)


# --------------------------------------------------------------------------
# polygons


def _c_int(v: np.ndarray) -> np.ndarray:
    # C's (int) cast truncates toward zero; floor would differ for negative
    # coordinates (polygons that leave the image).
    return np.trunc(v).astype(np.int64)


def _poly_counts(xy: Sequence[float], h: int, w: int) -> np.ndarray:
    """rleFrPoly: rasterise one polygon, returns counts."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1)
    k = len(xy) // 2
    if k == 0:
        return np.array([h * w], dtype=np.int64)
    scale = 5.0
    # Work on a grid 5x finer than the image, then keep the points where the
    # boundary crosses a pixel-centre column.
    x = _c_int(scale * xy[0 : 2 * k : 2] + 0.5)
    y = _c_int(scale * xy[1 : 2 * k : 2] + 0.5)
    x = np.append(x, x[0])
    y = np.append(y, y[0])
    us = []
    vs = []
    for j in range(k):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx = abs(xe - xs)
        dy = abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe = xe, xs
            ys, ye = ye, ys
        if dx >= dy:
            # dx == dy == 0 (repeated vertex) is 0/0 in C; that point's v is
            # never read because its u equals both neighbours', so 0 is safe.
            s = (ye - ys) / dx if dx else 0.0
            d = np.arange(dx + 1)
            t = dx - d if flip else d
            us.append(t + xs)
            vs.append(_c_int(ys + s * t + 0.5))
        else:
            s = (xe - xs) / dy
            d = np.arange(dy + 1)
            t = dy - d if flip else d
            vs.append(t + ys)
            us.append(_c_int(xs + s * t + 0.5))
    u = np.concatenate(us)
    v = np.concatenate(vs)

    # y-boundary points where the boundary steps between columns, downsampled
    u0, u1 = u[:-1], u[1:]
    v0, v1 = v[:-1], v[1:]
    step = u1 != u0
    xd = np.where(u1 < u0, u1, u1 - 1).astype(np.float64)
    xd = (xd + 0.5) / scale - 0.5
    keep = step & (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.where(v1 < v0, v1, v0).astype(np.float64)
    yd = (yd + 0.5) / scale - 0.5
    yd = np.clip(yd, 0, h)
    yd = np.ceil(yd)
    bx = xd[keep].astype(np.int64)
    by = yd[keep].astype(np.int64)

    a = np.concatenate((bx * h + by, [h * w]))
    a.sort(kind="stable")
    a = np.diff(np.concatenate(([0], a)))
    # Two boundary points on the same pixel cancel: fold the empty run and
    # the following one into the previous run, as the C loop does.
    b = [int(a[0])]
    j = 1
    n = len(a)
    while j < n:
        if a[j] > 0:
            b.append(int(a[j]))
            j += 1
        else:
            j += 1
            if j < n:
                b[-1] += int(a[j])
                j += 1
    return np.asarray(b, dtype=np.int64)


def fr_poly(xy: Sequence[float], h: int, w: int) -> dict:
    """Compressed RLE of one polygon [x0, y0, x1, y1, ...] (rleFrPoly)."""
    return {"size": [int(h), int(w)], "counts": counts_to_string(_poly_counts(xy, h, w))}


def fr_bbox(bb: Sequence[float], h: int, w: int) -> dict:
    """Compressed RLE of a box [x, y, w, h] (rleFrBbox: the box as a polygon)."""
    xs, ys, bw, bh = (float(v) for v in bb)
    xe, ye = xs + bw, ys + bh
    return fr_poly([xs, ys, xs, ye, xe, ye, xe, ys], h, w)


def merge(rles: Sequence[dict], intersect: bool = False) -> dict:
    """Union (or intersection) of RLEs of one size (rleMerge)."""
    if not rles:
        raise ValueError("merge needs at least one RLE")
    masks = [decode(r) for r in rles]
    shape = masks[0].shape
    for m in masks[1:]:
        if m.shape != shape:
            raise ValueError(f"merge: RLE sizes differ: {shape} vs {m.shape}")
    out = masks[0].astype(bool)
    for m in masks[1:]:
        out = (out & (m != 0)) if intersect else (out | (m != 0))
    return encode(out)


def fr_segmentation(segm, h: int, w: int) -> dict:
    """Any accepted segmentation as one compressed RLE (pycocotools annToRLE).

    Polygons of one object are rasterised separately and united; an
    uncompressed RLE keeps its counts exactly (no re-encoding), like
    frUncompressedRLE.
    """
    if isinstance(segm, dict):
        counts = segm.get("counts")
        size = [int(v) for v in segm["size"]]
        if isinstance(counts, (str, bytes, bytearray)):
            c = counts.decode("ascii") if isinstance(counts, (bytes, bytearray)) else counts
            return {"size": size, "counts": c}
        return {"size": size, "counts": counts_to_string(np.asarray(counts, dtype=np.int64))}
    if isinstance(segm, (list, tuple)):
        polys = [p for p in segm]
        if polys and not isinstance(polys[0], (list, tuple, np.ndarray)):
            polys = [polys]  # a single flat polygon
        if not polys:
            return encode(np.zeros((h, w), dtype=np.uint8))
        rles = [fr_poly(p, h, w) for p in polys]
        return rles[0] if len(rles) == 1 else merge(rles)
    raise ValueError(f"unsupported segmentation type {type(segm).__name__}")


# --------------------------------------------------------------------------
# IoU


def box_iou(dt: np.ndarray, gt: np.ndarray, iscrowd: Iterable[int] | None = None) -> np.ndarray:
    """IoU of boxes [x, y, w, h]: [len(dt), len(gt)] (bbIou).

    For a crowd ground truth the denominator is the detection's area, so a
    detection inside a crowd region scores 1 however large the region is.
    """
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    crowd = np.zeros(len(gt), dtype=bool) if iscrowd is None else np.asarray(list(iscrowd), dtype=bool)
    if len(crowd) != len(gt):
        raise ValueError(f"iscrowd has {len(crowd)} entries for {len(gt)} ground truths")
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)), dtype=np.float64)
    da = dt[:, 2] * dt[:, 3]
    ga = gt[:, 2] * gt[:, 3]
    iw = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - np.maximum(
        dt[:, None, 0], gt[None, :, 0]
    )
    ih = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - np.maximum(
        dt[:, None, 1], gt[None, :, 1]
    )
    inter = iw * ih
    union = np.where(crowd[None, :], da[:, None], da[:, None] + ga[None, :] - inter)
    valid = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(valid, inter / np.where(valid, union, 1.0), 0.0)
    return out


class _Runs:
    """Foreground runs of one RLE as sorted [start, end) intervals."""

    __slots__ = ("h", "w", "starts", "ends", "before", "area", "bbox")

    def __init__(self, counts: np.ndarray, h: int, w: int):
        self.h, self.w = h, w
        cum = np.concatenate(([0], np.cumsum(counts)))
        idx = np.arange(1, len(counts), 2)
        starts = cum[idx]
        ends = cum[idx + 1]
        nz = ends > starts
        self.starts = starts[nz]
        self.ends = ends[nz]
        lengths = self.ends - self.starts
        self.before = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else lengths
        self.area = int(lengths.sum())
        self.bbox = _bbox_from_counts(counts, h, w)

    def covered_below(self, x: np.ndarray) -> np.ndarray:
        """Foreground pixels with index < x, for each x."""
        if len(self.starts) == 0:
            return np.zeros(len(x), dtype=np.int64)
        i = np.searchsorted(self.starts, x, side="right") - 1
        ic = np.clip(i, 0, None)
        within = np.clip(x - self.starts[ic], 0, self.ends[ic] - self.starts[ic])
        return np.where(i >= 0, self.before[ic] + within, 0)

    def intersection(self, other: "_Runs") -> int:
        if len(other.starts) == 0 or len(self.starts) == 0:
            return 0
        return int((self.covered_below(other.ends) - self.covered_below(other.starts)).sum())


def _runs_of(segm) -> _Runs:
    if isinstance(segm, _Runs):
        return segm
    counts, h, w = _counts_and_size(segm)
    return _Runs(counts, h, w)


def iou(dt: Sequence, gt: Sequence, iscrowd: Iterable[int] | None = None) -> np.ndarray:
    """Mask IoU of RLEs: [len(dt), len(gt)] (rleIou).

    For a crowd ground truth the value is intersection / area(dt).
    """
    dr = [_runs_of(d) for d in dt]
    gr = [_runs_of(g) for g in gt]
    crowd = [False] * len(gr) if iscrowd is None else [bool(c) for c in iscrowd]
    if len(crowd) != len(gr):
        raise ValueError(f"iscrowd has {len(crowd)} entries for {len(gr)} ground truths")
    out = np.zeros((len(dr), len(gr)), dtype=np.float64)
    if not dr or not gr:
        return out
    # Like the C code, only pairs whose boxes overlap are compared pixelwise.
    bo = box_iou(np.stack([d.bbox for d in dr]), np.stack([g.bbox for g in gr]), crowd)
    for di, gi in zip(*np.nonzero(bo > 0)):
        d, g = dr[di], gr[gi]
        if (d.h, d.w) != (g.h, g.w):
            raise ValueError(f"iou: detection size {(d.h, d.w)} differs from ground-truth size {(g.h, g.w)}")
        inter = d.intersection(g)
        if inter == 0:
            continue
        union = d.area if crowd[gi] else d.area + g.area - inter
        out[di, gi] = inter / union
    return out
