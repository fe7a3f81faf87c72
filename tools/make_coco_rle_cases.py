"""Record pycocotools' COCO RLE / polygon outputs for the Rust mask code to match bit for bit.

Writes `diffris-data/tests/fixtures/coco_rle_cases.json`. Dev-only; CI never runs it:

    ../venv-data/bin/python tools/make_coco_rle_cases.py          # (re)write the file
    ../venv-data/bin/python tools/make_coco_rle_cases.py --check  # compare, exit 1 if stale

Conventions in the file
  mask_rows            one '0'/'1' string per image row (row-major, readable). pycocotools itself
                       works on the column-major (Fortran-order) flattening of the HxW mask.
  counts               the compressed RLE string (`pycocotools.mask.encode(...)["counts"]`).
  uncompressed_counts  the run lengths over the column-major flattening, starting with a run of
                       0s (which is 0 when pixel (0,0) is set).
  area                 number of 1 pixels.

Top-level keys
  masks        encode cases (mask -> counts, uncompressed_counts, area)
  polygons     `frPyObjects(polygons, h, w)` then `merge` (union) -> counts / mask_rows / area;
               `part_counts` holds each polygon's own RLE before the merge. Polygon coordinates
               are [x0, y0, x1, y1, ...] with x the column and y the row.
  decode_only  compressed strings (some written by hand, not by `encode`) with what
               `pycocotools.mask.decode` gives, or the error it raises.

The random masks come from a private xorshift generator, so the file is the same on every run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from importlib.metadata import version

import numpy as np
from pycocotools import mask as cocomask

REPO = pathlib.Path(__file__).resolve().parent.parent
OUT = REPO / "diffris-data" / "tests" / "fixtures" / "coco_rle_cases.json"


class XorShift32:
    def __init__(self, seed: int):
        self.state = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def unit(self) -> float:
        return self.next() / 2.0**32


def rows_of(m: np.ndarray) -> list[str]:
    return ["".join("1" if v else "0" for v in row) for row in m]


def runs_column_major(m: np.ndarray) -> list[int]:
    """Run lengths over the column-major flattening, the first run counting 0s."""
    flat = np.asarray(m, dtype=np.uint8).flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


def encode(m: np.ndarray) -> dict:
    return cocomask.encode(np.asfortranarray(m.astype(np.uint8)))


def mask_case(name: str, m: np.ndarray, note: str = "") -> dict:
    m = np.asarray(m, dtype=np.uint8)
    h, w = m.shape
    rle = encode(m)
    runs = runs_column_major(m)
    # Cross-check: the string pycocotools builds from our run lengths equals encode's string,
    # and decoding it gives the mask back.
    again = cocomask.frPyObjects({"size": [h, w], "counts": runs}, h, w)
    assert again["counts"] == rle["counts"], name
    assert np.array_equal(cocomask.decode(rle), m), name
    assert int(cocomask.area(rle)) == int(m.sum()), name
    case = {"name": name, "h": h, "w": w, "mask_rows": rows_of(m),
            "counts": rle["counts"].decode("ascii"), "uncompressed_counts": runs,
            "area": int(m.sum())}
    if note:
        case["note"] = note
    return case


def random_mask(h: int, w: int, density: float, seed: int) -> np.ndarray:
    rng = XorShift32(seed)
    m = np.zeros((h, w), dtype=np.uint8)
    for r in range(h):
        for c in range(w):
            m[r, c] = 1 if rng.unit() < density else 0
    return m


def blob_mask(h: int, w: int, seed: int, n: int) -> np.ndarray:
    """A few random discs: long runs of both values, deltas of both signs."""
    rng = XorShift32(seed)
    rr, cc = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), dtype=np.uint8)
    for _ in range(n):
        cy, cx = rng.unit() * h, rng.unit() * w
        rad = 3 + rng.unit() * min(h, w) / 4
        m |= (((rr - cy) ** 2 + (cc - cx) ** 2) <= rad * rad).astype(np.uint8)
    return m


def build_masks() -> list[dict]:
    cases = []
    cases.append(mask_case("zeros_3x4", np.zeros((3, 4))))
    cases.append(mask_case("ones_3x4", np.ones((3, 4)),
                           "starts with 1: first count is 0"))
    cases.append(mask_case("zeros_1x1", np.zeros((1, 1))))
    cases.append(mask_case("ones_1x1", np.ones((1, 1))))
    m = np.zeros((5, 9)); m[0, 0] = 1
    cases.append(mask_case("single_pixel_first_5x9", m, "pixel (row 0, col 0)"))
    m = np.zeros((5, 9)); m[4, 8] = 1
    cases.append(mask_case("single_pixel_last_5x9", m, "pixel (row 4, col 8): last in both orders"))
    m = np.zeros((5, 9)); m[0, 8] = 1
    cases.append(mask_case("single_pixel_top_right_5x9", m,
                           "row-major index 8 but column-major index 40"))
    m = np.zeros((5, 9)); m[4, 0] = 1
    cases.append(mask_case("single_pixel_bottom_left_5x9", m,
                           "row-major index 36 but column-major index 4"))
    rr, cc = np.mgrid[0:5, 0:9]
    cases.append(mask_case("checkerboard_5x9", (rr + cc) % 2 == 0))
    rr, cc = np.mgrid[0:8, 0:8]
    cases.append(mask_case("checkerboard_8x8", (rr + cc) % 2 == 1,
                           "even height: every column starts with the same value"))
    cases.append(mask_case("row_1x7", np.array([[0, 1, 1, 0, 1, 0, 0]])))
    cases.append(mask_case("column_7x1", np.array([[1], [1], [0], [1], [0], [0], [1]])))
    m = np.zeros((5, 9)); m[1:4, 2:7] = 1
    cases.append(mask_case("rectangle_5x9", m))
    m = np.zeros((5, 9)); m[2, :] = 1
    cases.append(mask_case("horizontal_line_5x9", m, "many short runs, repeating deltas (0s)"))
    for i, dens in enumerate((0.05, 0.3, 0.5, 0.7, 0.95)):
        cases.append(mask_case(f"random_32x32_d{int(dens * 100):02d}",
                               random_mask(32, 32, dens, seed=1000 + i)))
    cases.append(mask_case("random_5x9_d50", random_mask(5, 9, 0.5, seed=77)))
    cases.append(mask_case("random_64x48_d40", random_mask(64, 48, 0.4, seed=4848)))
    cases.append(mask_case("blobs_64x48", blob_mask(64, 48, seed=6448, n=4),
                           "non-square, long runs of both values"))
    cases.append(mask_case("blobs_48x64", blob_mask(48, 64, seed=4864, n=5)))
    m = np.ones((200, 200), dtype=np.uint8)
    m[0:3, 0] = 0            # leading run of three 0s
    m[0, 100] = 0            # column-major index 20000: a run of 19997 1s before it
    m[3, 100] = 0            # then a run of only two 1s: x_i - x_(i-2) = 2 - 19997 < -16384
    m[150:153, 150:152] = 0  # a small 3x2 hole
    m[199, 199] = 0          # last pixel off: the final run is a run of 0s of length 1
    cases.append(mask_case("long_runs_200x200", m,
                           "mostly 1s: runs of ~20000 and ~10000 1s between runs of 1-3 0s, so "
                           "4-group varints for both a large positive value and a large "
                           "negative delta x_i - x_(i-2)"))
    return cases


def polygon_case(name: str, h: int, w: int, polys: list[list[float]], note: str = "") -> dict:
    parts = cocomask.frPyObjects(polys, h, w)
    merged = cocomask.merge(parts)
    m = cocomask.decode(merged)
    union = cocomask.decode(parts).max(axis=2)
    assert np.array_equal(m, union), name
    case = {"name": name, "h": h, "w": w, "polygons": polys,
            "counts": merged["counts"].decode("ascii"),
            "part_counts": [p["counts"].decode("ascii") for p in parts],
            "mask_rows": rows_of(m), "area": int(m.sum())}
    if note:
        case["note"] = note
    return case


def build_polygons() -> list[dict]:
    cases = []
    cases.append(polygon_case("triangle_fractional", 10, 12,
                              [[1.3, 1.7, 10.6, 3.2, 4.4, 8.9]]))
    cases.append(polygon_case("rectangle_pixel_edges", 12, 12,
                              [[2.0, 3.0, 7.0, 3.0, 7.0, 8.0, 2.0, 8.0]],
                              "corners on integer coordinates"))
    cases.append(polygon_case("rectangle_pixel_edges_clockwise", 12, 12,
                              [[2.0, 3.0, 2.0, 8.0, 7.0, 8.0, 7.0, 3.0]],
                              "same rectangle, opposite orientation"))
    cases.append(polygon_case("rectangle_half_coordinates", 12, 12,
                              [[1.5, 2.5, 6.5, 2.5, 6.5, 7.5, 1.5, 7.5]]))
    cases.append(polygon_case("concave_u_shape", 16, 20,
                              [[2.2, 2.0, 6.1, 2.0, 6.1, 10.4, 13.7, 10.4, 13.7, 2.0, 17.5, 2.0,
                                17.5, 14.3, 2.2, 14.3]]))
    cases.append(polygon_case("concave_arrow_fractional", 24, 24,
                              [[3.25, 11.5, 12.0, 3.1, 12.0, 8.0, 20.75, 8.0, 20.75, 15.0, 12.0,
                                15.0, 12.0, 19.9]]))
    cases.append(polygon_case("partly_outside", 10, 10,
                              [[-3.5, -2.0, 6.2, 1.1, 13.0, 7.5, 4.0, 12.6]],
                              "vertices left of, above, right of and below the image"))
    cases.append(polygon_case("two_polygons_disjoint", 14, 16,
                              [[1.0, 1.0, 6.5, 1.0, 6.5, 5.5, 1.0, 5.5],
                               [9.2, 7.1, 14.8, 9.0, 11.0, 13.3]]))
    cases.append(polygon_case("two_polygons_overlapping", 14, 16,
                              [[1.0, 1.0, 9.5, 1.0, 9.5, 8.5, 1.0, 8.5],
                               [5.2, 4.1, 14.8, 6.0, 8.0, 13.3]],
                              "merge = union: the overlap is counted once"))
    cases.append(polygon_case("pentagram_self_intersecting", 32, 32,
                              [[16.0, 2.0, 24.2, 27.3, 2.7, 11.6, 29.3, 11.6, 7.8, 27.3]],
                              "even-odd fill: the central pentagon is empty"))
    cases.append(polygon_case("tiny_subpixel_triangle", 8, 8,
                              [[3.1, 3.1, 3.4, 3.2, 3.2, 3.45]]))
    cases.append(polygon_case("thin_sliver", 8, 10, [[0.5, 1.0, 9.5, 1.3, 0.5, 1.6]]))
    cases.append(polygon_case("degenerate_collinear", 8, 8, [[1.0, 1.0, 4.0, 4.0, 6.0, 6.0]]))
    cases.append(polygon_case("full_image_rectangle", 6, 7,
                              [[0.0, 0.0, 7.0, 0.0, 7.0, 6.0, 0.0, 6.0]]))
    cases.append(polygon_case("negative_coordinate_rounding", 5, 23,
                              [[16.0, -0.1, 23.0, 2.0, 1.6, -0.61]],
                              "vertices at y = -0.1 and -0.61: (int)(5*y + 0.5) truncates toward "
                              "zero (-0.61 -> -2, floor would give -3) and that changes pixels"))
    cases.append(polygon_case("repeated_vertex", 8, 10,
                              [[2.0, 1.0, 8.0, 1.0, 8.0, 1.0, 8.0, 6.0, 2.0, 6.0]],
                              "a zero-length edge (dx = dy = 0: 0/0 slope in the C code) is "
                              "harmless"))
    rng = XorShift32(321)
    pts = []
    for k in range(11):
        ang = 2 * np.pi * k / 11
        rad = 8 + rng.unit() * 14
        pts += [round(24 + rad * np.cos(ang), 3), round(32 + rad * np.sin(ang), 3)]
    cases.append(polygon_case("irregular_11gon_64x48", 64, 48, [pts],
                              "non-square image (h=64 rows, w=48 columns)"))
    return cases


def decode_case(name: str, h: int, w: int, counts: str, note: str = "") -> dict:
    case = {"name": name, "h": h, "w": w, "counts": counts}
    try:
        m = cocomask.decode({"size": [h, w], "counts": counts.encode("ascii")})
        case["mask_rows"] = rows_of(m)
        case["area"] = int(m.sum())
        case["error"] = None
    except ValueError as err:
        case["mask_rows"] = None
        case["area"] = None
        case["error"] = f"ValueError: {err}"
    if note:
        case["note"] = note
    return case


def from_runs(runs: list[int], h: int, w: int) -> str:
    return cocomask.frPyObjects({"size": [h, w], "counts": runs}, h, w)["counts"].decode("ascii")


def build_decode_only() -> list[dict]:
    cases = []
    m = np.zeros((4, 5), dtype=np.uint8)
    m[:3, 0] = 1
    m[1:3, 3:5] = 1
    s = encode(m)["counts"].decode("ascii")
    cases.append(decode_case("leading_ones_4x5", 4, 5, s,
                             "encode of a mask whose pixel (0,0) is 1: first count is 0"))
    # Stored values chosen at the varint edges: 15 / 16 (one vs two groups, positive), -16 / -17
    # (one vs two groups, negative), 31, 32, -32, -33 ... x_i - x_(i-2) for i >= 3.
    stored = [15, 16, 31, 17, 0, -16, -17, 15, 32, -1, -32, 33, 1]
    runs = []
    for i, x in enumerate(stored):
        runs.append(x if i < 3 else x + runs[i - 2])
    assert all(r >= 0 for r in runs), runs
    total = sum(runs)
    h = 20
    w = -(-total // h)
    runs.append(h * w - total)
    s = from_runs(runs, h, w)
    c = decode_case("varint_edges", h, w, s,
                    "runs " + str(runs) + " chosen so the stored deltas hit the 1/2-group edges")
    c["uncompressed_counts"] = runs
    cases.append(c)
    runs = [2, 0, 3, 1, 0, 0, 6]
    c = decode_case("zero_length_runs_3x5", 3, 5, from_runs(runs, 3, 5),
                    "zero-length runs inside (not something encode produces): each still "
                    "flips the value")
    c["uncompressed_counts"] = runs
    cases.append(c)
    # Non-minimal varint: the value 3 written as two groups ('3'|0x20 then 0) -> chars 'S','0'.
    # The plain string for runs [3, 2, 1] on 2x3 is "321"; here the first value uses 2 groups.
    cases.append(decode_case("non_minimal_varint_2x3", 2, 3, "S021",
                             "first value 3 spelled with a redundant continuation group "
                             "(0x23+48='S', then 0+48='0'); the decoder must accept it"))
    cases.append(decode_case("plain_2x3", 2, 3, "321", "the minimal spelling of the case above"))
    cases.append(decode_case("counts_past_end_2x3", 2, 3, "34",
                             "runs 3 + 4 = 7 > 6 pixels: pycocotools refuses it"))
    cases.append(decode_case("empty_string_0x0", 0, 0, "", "no runs, no pixels"))
    return cases


def build() -> dict:
    return {
        "pycocotools_version": version("pycocotools"),
        "generator": "tools/make_coco_rle_cases.py",
        "conventions": ("mask_rows: row-major '0'/'1' strings; counts / uncompressed_counts: "
                        "column-major runs starting with a run of 0s; polygons: [x0,y0,x1,y1,..] "
                        "x = column, y = row; polygon counts = merge (union) of frPyObjects"),
        "masks": build_masks(),
        "polygons": build_polygons(),
        "decode_only": build_decode_only(),
    }


def _compact(v) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def dumps(obj) -> str:
    """JSON laid out for reading: one key per line, each mask row on its own line, lists of
    numbers on one line."""
    out = ["{"]
    top = sorted(obj)
    for i, key in enumerate(top):
        tail = "," if i + 1 < len(top) else ""
        val = obj[key]
        if not isinstance(val, list):
            out.append(f" {_compact(key)}: {_compact(val)}{tail}")
            continue
        out.append(f" {_compact(key)}: [")
        for j, case in enumerate(val):
            out.append("  {")
            keys = sorted(case)
            for k, ck in enumerate(keys):
                ctail = "," if k + 1 < len(keys) else ""
                cv = case[ck]
                if ck == "mask_rows" and cv:
                    rows = ",\n".join("    " + _compact(r) for r in cv)
                    out.append(f"   {_compact(ck)}: [\n{rows}\n   ]{ctail}")
                else:
                    out.append(f"   {_compact(ck)}: {_compact(cv)}{ctail}")
            out.append("  }" + ("," if j + 1 < len(val) else ""))
        out.append(" ]" + tail)
    out.append("}")
    text = "\n".join(out) + "\n"
    assert json.loads(text) == obj
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = dumps(build())
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print("coco_rle_cases.json is up to date" if same else "coco_rle_cases.json differs")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {args.out.relative_to(REPO)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
