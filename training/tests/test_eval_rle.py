"""COCO RLE: hand-computed pycocotools outputs, round trips, polygons, IoU."""

import numpy as np
import pytest

from htc.evaluation import rle


def test_known_4x4_mask_counts_and_string():
    # 2x2 square at rows 1-2, cols 1-2 of a 4x4 mask. Column-major order:
    #   col0 0000 | col1 0110 | col2 0110 | col3 0000
    # runs: 5 zeros (col0 + top of col1), 2 ones, 2 zeros, 2 ones, 5 zeros.
    m = np.zeros((4, 4), dtype=np.uint8)
    m[1:3, 1:3] = 1
    assert rle.encode_counts(m).tolist() == [5, 2, 2, 2, 5]
    # rleToString: counts 0..2 as they are -> '5' '2' '2' (48 + value);
    # count 3 is stored as 2 - counts[1] = 0 -> '0'; count 4 as 5 - counts[2] = 3 -> '3'.
    assert rle.encode(m) == {"size": [4, 4], "counts": "52203"}
    assert rle.decode(rle.encode(m)).tolist() == m.tolist()


def test_known_strings_for_sign_bit_and_continuation():
    # 16 = 0b10000: its low 5 bits have the sign bit (0x10) set, so a second
    # char is needed: ('\x10' | 0x20) + 48 = '`', then 0 + 48 = '0'.
    assert rle.encode(np.zeros((4, 4), dtype=np.uint8))["counts"] == "`0"
    # 100 = 3*32 + 4: low chunk 4 with "more" -> 4 + 32 + 48 = 'T', then 3 -> '3'.
    assert rle.counts_to_string([100]) == "T3"
    # counts [1, 10, 3, 2]: '1', ':' (48+10), '3', then 2 - 10 = -8:
    # -8 & 31 = 24 (sign bit set), -8 >> 5 = -1 -> stop; 24 + 48 = 'H'.
    assert rle.counts_to_string([1, 10, 3, 2]) == "1:3H"
    # a mask that starts with a one starts with an empty zero run
    assert rle.encode(np.ones((2, 2), dtype=np.uint8)) == {"size": [2, 2], "counts": "04"}


def test_string_round_trip_of_large_and_decreasing_counts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 100000, size=int(rng.integers(1, 30))).tolist()
        assert rle.string_to_counts(rle.counts_to_string(counts)).tolist() == counts
    with pytest.raises(ValueError):
        rle.string_to_counts("T")  # a continuation char with nothing after it


def test_encode_decode_area_bbox_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        e = rle.encode(m)
        assert e["size"] == [h, w]
        assert np.array_equal(rle.decode(e), m)
        assert rle.area(e) == int(m.sum())
        ys, xs = np.nonzero(m)
        expect = [0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert rle.to_bbox(e).tolist() == [float(v) for v in expect]
        # bytes counts (what pycocotools returns) are accepted too
        assert rle.area({"size": e["size"], "counts": e["counts"].encode()}) == int(m.sum())


def test_uncompressed_rle_is_compressed_verbatim():
    m = np.zeros((5, 3), dtype=np.uint8)
    m[2:4, 1] = 1
    counts = rle.encode_counts(m).tolist()
    assert counts == [7, 2, 6]
    out = rle.fr_segmentation({"size": [5, 3], "counts": counts}, 5, 3)
    assert out == rle.encode(m)


def test_polygon_traced_by_hand():
    # Rectangle (0,0)-(2,1) on a 4x4 image. Upsampled x5 its bottom and top
    # edges step through u = 0..10; a boundary point is kept where
    # (xd + .5)/5 - .5 is an integer, i.e. xd in {2, 7} -> columns 0 and 1.
    # Top edge: y = 0 -> (0.5/5 - .5) < 0 -> row 0; bottom edge: y = 5 ->
    # ceil(5.5/5 - .5) = 1. Boundary pixel indices x*h + y: 0, 4 (top),
    # 1, 5 (bottom), plus h*w = 16 -> sorted deltas [0, 1, 3, 1, 11].
    r = rle.fr_poly([0, 0, 2, 0, 2, 1, 0, 1], 4, 4)
    assert rle.string_to_counts(r["counts"]).tolist() == [0, 1, 3, 1, 11]
    assert rle.area(r) == 2


def test_polygon_area_of_axis_aligned_rectangle():
    r = rle.fr_poly([10, 20, 30, 20, 30, 50, 10, 50], 100, 100)
    assert rle.area(r) == 20 * 30
    assert rle.to_bbox(r).tolist() == [10.0, 20.0, 20.0, 30.0]
    m = rle.decode(r)
    assert m[20:50, 10:30].all() and m.sum() == 600
    # frBbox is the same polygon
    assert rle.fr_bbox([10, 20, 20, 30], 100, 100) == r
    # vertex order does not matter (clockwise vs counter-clockwise)
    assert rle.area(rle.fr_poly([10, 20, 10, 50, 30, 50, 30, 20], 100, 100)) == 600


def test_polygon_clipped_by_image_and_fractional():
    # part outside the image is cut off: pixels 0..9 in both axes remain
    assert rle.area(rle.fr_poly([-5, -5, 10, -5, 10, 10, -5, 10], 20, 20)) == 100
    # a fractional triangle: area within the boundary's pixel band of the exact area
    tri = [3.3, 2.7, 40.2, 8.1, 12.6, 35.9]
    x, y = np.array(tri[0::2]), np.array(tri[1::2])
    exact = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    perim = np.sum(np.hypot(x - np.roll(x, 1), y - np.roll(y, 1)))
    assert abs(rle.area(rle.fr_poly(tri, 50, 50)) - exact) < perim / 2


def test_polygons_of_one_object_are_united():
    a = [0, 0, 4, 0, 4, 4, 0, 4]
    b = [2, 2, 6, 2, 6, 6, 2, 6]
    r = rle.fr_segmentation([a, b], 10, 10)
    assert rle.area(r) == 16 + 16 - 4
    inter = rle.merge([rle.fr_poly(a, 10, 10), rle.fr_poly(b, 10, 10)], intersect=True)
    assert rle.area(inter) == 4


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return rle.encode(m)


def test_mask_iou_with_crowd():
    gt = _rect(20, 20, 0, 10, 0, 10)  # 100 px
    dt_half = _rect(20, 20, 0, 10, 5, 15)  # 100 px, 50 overlap
    dt_inside = _rect(20, 20, 2, 4, 2, 7)  # 10 px, all inside
    dt_far = _rect(20, 20, 15, 20, 15, 20)
    o = rle.iou([dt_half, dt_inside, dt_far], [gt], [0])
    # 50 / (100 + 100 - 50) = 1/3; 10 / 100; 0
    assert o.shape == (3, 1)
    np.testing.assert_allclose(o[:, 0], [50 / 150, 10 / 100, 0.0])
    oc = rle.iou([dt_half, dt_inside, dt_far], [gt], [1])
    # crowd: intersection / area(dt) -> 50/100, 10/10, 0
    np.testing.assert_allclose(oc[:, 0], [0.5, 1.0, 0.0])
    assert rle.iou([], [gt], [0]).shape == (0, 1)
    assert rle.iou([gt], [], []).shape == (1, 0)
    with pytest.raises(ValueError):
        rle.iou([_rect(10, 10, 0, 5, 0, 5)], [gt], [0])


def test_mask_iou_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.random((15, 12)) < 0.4
        b = rng.random((15, 12)) < 0.4
        inter = (a & b).sum()
        union = (a | b).sum()
        got = rle.iou([rle.encode(a)], [rle.encode(b)], [0])[0, 0]
        assert got == pytest.approx(inter / union if inter else 0.0)
        gotc = rle.iou([rle.encode(a)], [rle.encode(b)], [1])[0, 0]
        assert gotc == pytest.approx(inter / a.sum() if inter else 0.0)


def test_box_iou_with_crowd():
    gt = [[0, 0, 10, 10]]
    dt = [[5, 0, 10, 10], [2, 2, 2, 3], [10, 0, 5, 5]]
    # 50 / 150; 6 / 100; touching edges -> 0
    np.testing.assert_allclose(rle.box_iou(dt, gt, [0])[:, 0], [1 / 3, 0.06, 0.0])
    # crowd: 50 / 100; 6 / 6
    np.testing.assert_allclose(rle.box_iou(dt, gt, [1])[:, 0], [0.5, 1.0, 0.0])
    assert rle.box_iou(np.zeros((0, 4)), gt, [0]).shape == (0, 1)
