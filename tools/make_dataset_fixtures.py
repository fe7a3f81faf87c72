"""Write tiny dataset fixtures in the exact published layouts of RRSIS-D, RefSegRS and RISBench.

Output: `diffris-data/tests/fixtures/{rrsisd,rrsisd_proto5,refsegrs,risbench}/` (see
the module docs of diffris-data/src/formats/ for the real formats). Dev-only; CI never runs it:

    python3.11 -m venv ../venv-data
    ../venv-data/bin/pip install numpy Pillow pycocotools   # versions: tools/requirements.txt
    ../venv-data/bin/python tools/make_dataset_fixtures.py

Every run writes the same bytes: pixel noise
comes from a private xorshift generator, images are saved with fixed encoder settings, JSON with
sorted keys. `--check` regenerates into a temporary folder and compares with the committed tree.

Layout written (paths relative to the fixtures folder):

rrsisd/                              a real user's RRSIS-D root
  rrsisd/refs(unc).p                 pickle protocol 2, every string a `str`
  rrsisd/instances.json              COCO-like images / annotations / categories
  images/rrsisd/JPEGImages/000NN.jpg image_id 11 -> 00011.jpg
  expected.json                      what a reader must yield, split by split
rrsisd_proto5/rrsisd/refs(unc).p     same refs, pickle protocol 5, some split / sentence strings
                                     stored as `bytes`; use it with the instances.json and
                                     images of rrsisd/
refsegrs/  images/<id>.tif, masks/<id>.tif, output_phrase_{train,val,test}.txt, expected.json
risbench/  img_rgb/<f>.png, mask/<f>.png, output_phrase_{train,test}.txt (no val on purpose),
           expected.json

Mask digests: `mask_sha` is the sha256 (hex) of the decoded binary mask written as row-major
(row after row) uint8 bytes 0/1, of shape `mask_size` = [h, w]; `mask_area` is its number of 1s.
`mask_rows` spells the same mask as one '0'/'1' string per row.

RRSIS-D masks: a segmentation made of several parts is decoded as the UNION of its parts
(`mask_sha`); the LAVT/RMSIN reference sums the parts and keeps pixels equal to 1, so overlaps
become background: that variant is recorded as `mask_sha_sum_eq1` / `mask_area_sum_eq1`.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import pathlib
import pickle
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image
from pycocotools import mask as cocomask

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "diffris-data" / "tests" / "fixtures"
SUBDIRS = ("rrsisd", "rrsisd_proto5", "refsegrs", "risbench")

# The 20 DIOR categories, spelled as in the DIOR annotation files, ids 1..20.
DIOR_CATEGORIES = [
    "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
    "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield",
    "harbor", "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation",
    "vehicle", "windmill",
]
CAT_ID = {name: i + 1 for i, name in enumerate(DIOR_CATEGORIES)}


# --------------------------------------------------------------------------- small helpers


class XorShift32:
    """Tiny deterministic generator (independent of numpy / Python versions)."""

    def __init__(self, seed: int):
        self.state = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n: int) -> int:
        return self.next() % n


def textured(h: int, w: int, base: tuple[int, int, int], amp: int, seed: int) -> np.ndarray:
    """An HxWx3 uint8 background: a flat colour plus small deterministic noise."""
    rng = XorShift32(seed)
    img = np.empty((h, w, 3), dtype=np.uint8)
    for r in range(h):
        for c in range(w):
            for k in range(3):
                v = base[k] + rng.below(2 * amp + 1) - amp
                img[r, c, k] = max(0, min(255, v))
    return img


def paint(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    img[mask.astype(bool)] = colour


def rect(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Binary mask with rows r0..=r1, columns c0..=c1 set."""
    m = np.zeros((h, w), dtype=np.uint8)
    m[r0:r1 + 1, c0:c1 + 1] = 1
    return m


def disk(h: int, w: int, cr: float, cc: float, rad: float) -> np.ndarray:
    rr, cc_ = np.mgrid[0:h, 0:w]
    return (((rr - cr) ** 2 + (cc_ - cc) ** 2) <= rad * rad).astype(np.uint8)


def mask_digest(m: np.ndarray) -> dict:
    m = np.ascontiguousarray(m.astype(np.uint8))
    assert set(np.unique(m).tolist()) <= {0, 1}
    return {
        "mask_sha": hashlib.sha256(m.tobytes(order="C")).hexdigest(),
        "mask_size": [int(m.shape[0]), int(m.shape[1])],
        "mask_area": int(m.sum()),
        "mask_rows": ["".join("1" if v else "0" for v in row) for row in m],
    }


def coco_encode(m: np.ndarray) -> dict:
    """Compressed COCO RLE of a binary HxW mask, counts as str (as stored in instances.json)."""
    rle = cocomask.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def save_jpeg(arr: np.ndarray, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=92, subsampling=0,
                                          optimize=False, progressive=False)


def save_png(arr: np.ndarray, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=9)


def save_tiff(arr: np.ndarray, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="TIFF", compression=None)


def write_json(obj, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=True)
        f.write("\n")


def write_text(lines: list[str], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def sentence(sent_id: int, raw: str) -> dict:
    """A refer-style sentence record: `sent` is the lower-cased, punctuation-free token join."""
    tokens = [t.strip(".,!?;:").lower() for t in raw.split()]
    tokens = [t for t in tokens if t]
    return {"sent_id": sent_id, "tokens": tokens, "raw": raw, "sent": " ".join(tokens)}


# --------------------------------------------------------------------------- RRSIS-D


def build_rrsisd(root: pathlib.Path) -> None:
    ds = root / "rrsisd"
    jpeg_dir = ds / "images" / "rrsisd" / "JPEGImages"

    images = []        # instances.json images
    annotations = []   # instances.json annotations
    truth = {}         # ann_id -> (union mask, sum==1 mask) computed independently with numpy
    jpeg_size = {}     # image_id -> [h, w] of the JPEG actually written

    def add_image(image_id: int, h: int, w: int, jpeg_arr: np.ndarray) -> str:
        name = f"{image_id:05d}.jpg"
        save_jpeg(jpeg_arr, jpeg_dir / name)
        jpeg_size[image_id] = [int(jpeg_arr.shape[0]), int(jpeg_arr.shape[1])]
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        return name

    def add_ann(ann_id: int, image_id: int, cat: str, segmentation, union: np.ndarray,
                sum_eq1: np.ndarray | None = None) -> None:
        ys, xs = np.nonzero(union)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        annotations.append({
            "id": ann_id, "image_id": image_id, "category_id": CAT_ID[cat],
            "segmentation": segmentation, "bbox": bbox, "area": float(union.sum()), "iscrowd": 0,
        })
        truth[ann_id] = (union, union if sum_eq1 is None else sum_eq1)

    # Image 11 (32x32): an airplane (cross) and a ship (long dark-red hull) on blue water/grey.
    h, w = 32, 32
    plane = np.maximum.reduce([rect(h, w, 3, 16, 8, 10), rect(h, w, 7, 9, 3, 15),
                               rect(h, w, 14, 15, 6, 12)])
    ship = rect(h, w, 22, 25, 14, 28)
    img = textured(h, w, (70, 110, 150), 6, seed=11)
    img[:18, :18] = textured(18, 18, (128, 128, 120), 5, seed=111)   # apron under the plane
    paint(img, plane, (245, 245, 245))
    paint(img, ship, (150, 30, 30))
    add_image(11, h, w, img)
    add_ann(101, 11, "airplane", [coco_encode(plane)], plane)
    add_ann(102, 11, "ship", [coco_encode(ship)], ship)

    # Image 12: the JPEG is 32 rows x 33 columns, instances.json and the RLE say 32x32 (like the
    # real 800x801 files). The vehicle touches the last RLE column (31); column 32 exists only
    # in the JPEG.
    vehicle = rect(32, 32, 12, 16, 26, 31)
    img = textured(32, 33, (90, 90, 90), 8, seed=12)
    img[:, :32][vehicle.astype(bool)] = (230, 200, 20)
    add_image(12, 32, 32, img)
    add_ann(103, 12, "vehicle", [coco_encode(vehicle)], vehicle)

    # Image 7 (32x32): two storage tanks annotated as ONE object whose segmentation holds two
    # RLE parts that overlap (a lens-shaped intersection), and a chimney.
    h, w = 32, 32
    tank_a = disk(h, w, 16, 10, 6.0)
    tank_b = disk(h, w, 16, 18, 6.0)
    both = np.maximum(tank_a, tank_b)
    summed = tank_a.astype(np.int32) + tank_b.astype(np.int32)
    sum_eq1 = (summed == 1).astype(np.uint8)
    chimney = rect(h, w, 2, 9, 25, 27)
    img = textured(h, w, (120, 140, 90), 6, seed=7)
    paint(img, both, (210, 210, 200))
    paint(img, np.logical_and(tank_a, tank_b).astype(np.uint8), (180, 180, 170))
    paint(img, chimney, (60, 40, 40))
    add_image(7, h, w, img)
    add_ann(105, 7, "storagetank", [coco_encode(tank_a), coco_encode(tank_b)], both, sum_eq1)
    add_ann(106, 7, "chimney", [coco_encode(chimney)], chimney)

    # Image 123 (40 rows x 48 columns, not square on purpose): a harbor given as a POLYGON list
    # (RefCOCO style) with fractional vertices, concave (an L), and an RLE bridge.
    h, w = 40, 48
    harbor_poly = [[4.5, 5.0, 30.0, 5.0, 30.0, 12.25, 14.0, 12.25, 14.0, 34.5, 4.5, 34.5]]
    harbor_rles = cocomask.frPyObjects(harbor_poly, h, w)
    harbor = cocomask.decode(harbor_rles).max(axis=2).astype(np.uint8)
    bridge = rect(h, w, 20, 23, 20, 46)
    img = textured(h, w, (60, 100, 140), 6, seed=123)
    paint(img, harbor, (170, 160, 140))
    paint(img, bridge, (100, 100, 100))
    add_image(123, h, w, img)
    add_ann(104, 123, "harbor", harbor_poly, harbor)
    add_ann(107, 123, "bridge", [coco_encode(bridge)], bridge)

    # Refs, in list order. Splits: train = refs 0, 3; val = refs 1, 6; test = refs 2, 4, 5
    # (ref 5's split string is "test_extra": it belongs to test because it contains "test").
    def ref(ref_id, ann_id, image_id, cat, split, raws, first_sent_id):
        sents = [sentence(first_sent_id + i, raw) for i, raw in enumerate(raws)]
        return {
            "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": CAT_ID[cat],
            "split": split, "sent_ids": [s["sent_id"] for s in sents], "sentences": sents,
            "file_name": f"{image_id:05d}.jpg",
        }

    refs = [
        ref(0, 101, 11, "airplane", "train",
            ["The white airplane on the upper left.", "A plane parked on the grey apron"], 10),
        ref(1, 102, 11, "ship", "val", ["The red ship at the bottom right"], 12),
        ref(2, 103, 12, "vehicle", "test", ["A yellow vehicle at the right edge."], 13),
        ref(3, 104, 123, "harbor", "train", ["The L-shaped harbor on the left"], 14),
        ref(4, 105, 7, "storagetank", "test", ["The two overlapping storage tanks"], 15),
        ref(5, 106, 7, "chimney", "test_extra", ["The dark chimney in the top right corner"], 16),
        ref(6, 107, 123, "bridge", "val", ["The long grey bridge across the water"], 17),
    ]

    categories = [{"id": CAT_ID[n], "name": n, "supercategory": n} for n in DIOR_CATEGORIES]
    instances = {"images": images, "annotations": annotations, "categories": categories}
    write_json(instances, ds / "rrsisd" / "instances.json")

    with open(ds / "rrsisd" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)

    # Protocol-5 copy with some strings as bytes (as a Python-2 pickle read with
    # encoding='bytes' would give): split of refs 1 and 5, both text fields of ref 0's second
    # sentence, `sent` and the tokens of ref 4.
    refs_b = pickle.loads(pickle.dumps(refs))
    refs_b[1]["split"] = refs_b[1]["split"].encode()
    refs_b[5]["split"] = refs_b[5]["split"].encode()
    s = refs_b[0]["sentences"][1]
    s["raw"], s["sent"] = s["raw"].encode(), s["sent"].encode()
    s = refs_b[4]["sentences"][0]
    s["sent"] = s["sent"].encode()
    s["tokens"] = [t.encode() for t in s["tokens"]]
    p5 = root / "rrsisd_proto5" / "rrsisd" / "refs(unc).p"
    p5.parent.mkdir(parents=True, exist_ok=True)
    with open(p5, "wb") as f:
        pickle.dump(refs_b, f, protocol=5)

    # ---- expected.json: decode every annotation with pycocotools, check against numpy truth.
    img_by_id = {im["id"]: im for im in images}
    ann_by_id = {a["id"]: a for a in annotations}
    cat_name = {c["id"]: c["name"] for c in categories}

    def decode_parts(ann) -> np.ndarray:
        seg = ann["segmentation"]
        im = img_by_id[ann["image_id"]]
        if isinstance(seg[0], list):
            rles = cocomask.frPyObjects(seg, im["height"], im["width"])
        else:
            rles = seg
        return cocomask.decode(rles)  # h x w x parts

    expected = {
        "dataset": "rrsisd",
        "generator": "tools/make_dataset_fixtures.py",
        "pycocotools_version": _pycocotools_version(),
        "mask_digest": "sha256 of the row-major uint8 0/1 mask; multi-part = union of parts; "
                       "*_sum_eq1 = reference LAVT/RMSIN decoding (sum of parts == 1)",
        "split_rule": "train/val: split string equal; test: split string contains 'test'",
        "split_strings": {str(r["ref_id"]): r["split"] for r in refs},
    }
    for split in ("train", "val", "test"):
        rows = []
        for r in refs:
            keep = (r["split"] == split) if split != "test" else ("test" in r["split"])
            if not keep:
                continue
            ann = ann_by_id[r["ann_id"]]
            parts = decode_parts(ann)
            union = parts.max(axis=2).astype(np.uint8)
            eq1 = (parts.astype(np.int32).sum(axis=2) == 1).astype(np.uint8)
            want_union, want_eq1 = truth[ann["id"]]
            assert np.array_equal(union, want_union), ann["id"]
            assert np.array_equal(eq1, want_eq1), ann["id"]
            im = img_by_id[r["image_id"]]
            seg_kind = ("polygon" if isinstance(ann["segmentation"][0], list)
                        else f"rle x{len(ann['segmentation'])}")
            for sent in r["sentences"]:
                row = {
                    "ref_id": r["ref_id"], "ann_id": r["ann_id"], "image_id": r["image_id"],
                    "sent_id": sent["sent_id"], "split_string": r["split"],
                    "image_file": im["file_name"],
                    "image_path": f"images/rrsisd/JPEGImages/{im['file_name']}",
                    "image_size": jpeg_size[r["image_id"]],
                    "sentence": sent["sent"], "raw": sent["raw"],
                    "category": cat_name[r["category_id"]], "category_id": r["category_id"],
                    "segmentation_kind": seg_kind,
                }
                row.update(mask_digest(union))
                d1 = mask_digest(eq1)
                row["mask_sha_sum_eq1"] = d1["mask_sha"]
                row["mask_area_sum_eq1"] = d1["mask_area"]
                rows.append(row)
        expected[split] = rows

    # The two-part annotation in detail.
    ann = ann_by_id[105]
    parts = cocomask.decode(ann["segmentation"])
    detail = {"ann_id": 105, "ref_id": 4, "parts": []}
    for i, part in enumerate(ann["segmentation"]):
        one = cocomask.decode(part)
        assert np.array_equal(one, parts[:, :, i])
        d = mask_digest(one)
        d.update({"counts": part["counts"], "size": part["size"],
                  "pycocotools_area": int(cocomask.area(part))})
        detail["parts"].append(d)
    union = parts.max(axis=2)
    summed = parts.astype(np.int32).sum(axis=2)
    detail["union"] = mask_digest(union)
    detail["union"]["counts"] = cocomask.merge(ann["segmentation"])["counts"].decode()
    detail["intersection"] = mask_digest((summed == 2).astype(np.uint8))
    detail["sum_eq1"] = mask_digest((summed == 1).astype(np.uint8))
    detail["sum_of_part_areas"] = int(sum(cocomask.area(ann["segmentation"])))
    detail["note"] = ("decode(list of 2 RLEs) gives an HxWx2 array; union = max over parts; the "
                      "LAVT/RMSIN getMask sums the parts and its dataset keeps pixels == 1, so "
                      "the lens-shaped overlap (intersection) becomes background there")
    expected["two_part_annotation"] = detail
    write_json(expected, ds / "expected.json")


def _pycocotools_version() -> str:
    from importlib.metadata import version
    return version("pycocotools")


# --------------------------------------------------------------------------- RefSegRS


def build_refsegrs(root: pathlib.Path) -> None:
    ds = root / "refsegrs"
    h = w = 32
    scenes = {}

    # id 3: a building (grey square) with a soft edge of value 40 (background) and 51 (foreground)
    m = np.zeros((h, w), dtype=np.uint8)
    m[8:20, 6:18] = 255
    m[8, 18] = 40           # 40 <= 50: background
    m[19, 18] = 51          # 51 > 50: foreground
    m[20, 6:18] = 50        # 50: background (threshold is strictly greater than 50)
    img = textured(h, w, (90, 130, 80), 6, seed=3)
    paint(img, (m > 50).astype(np.uint8), (150, 150, 150))
    scenes["3"] = (img, m)

    # id 17: a road (diagonal band of 255), a stray speckle of 30 (background) and one
    # pixel of 200 (foreground).
    m = np.zeros((h, w), dtype=np.uint8)
    for r in range(h):
        c0 = max(0, r - 3)
        m[r, c0:min(w, r + 3)] = 255
    m[2, 25] = 30
    m[28, 3] = 200
    img = textured(h, w, (100, 120, 70), 6, seed=17)
    paint(img, (m > 50).astype(np.uint8), (60, 60, 65))
    scenes["17"] = (img, m)

    # id 42: two cars, the mask marks both (values 255 and 128).
    m = np.zeros((h, w), dtype=np.uint8)
    m[4:8, 4:10] = 255
    m[22:26, 20:27] = 128
    img = textured(h, w, (80, 80, 85), 5, seed=42)
    paint(img, (m > 50).astype(np.uint8), (200, 30, 30))
    scenes["42"] = (img, m)

    # id 105: an empty mask (nothing matches: all zeros plus a 40 speckle).
    m = np.zeros((h, w), dtype=np.uint8)
    m[16, 16] = 40
    img = textured(h, w, (110, 140, 90), 6, seed=105)
    scenes["105"] = (img, m)

    for sid, (img, m) in scenes.items():
        save_tiff(img, ds / "images" / f"{sid}.tif")
        save_tiff(m, ds / "masks" / f"{sid}.tif")

    splits = {
        "train": [("3", "the grey building in the middle left"),
                  ("17", "the road running from top left to bottom right"),
                  ("3", "building")],
        "val": [("42", "the red cars")],
        "test": [("105", "the swimming pool"), ("17", "road")],
    }
    expected = {"dataset": "refsegrs", "generator": "tools/make_dataset_fixtures.py",
                "foreground": "mask value > 50",
                "mask_digest": "sha256 of the row-major uint8 0/1 mask"}
    for split, lines in splits.items():
        write_text([f"{sid} {text}" for sid, text in lines], ds / f"output_phrase_{split}.txt")
        rows = []
        for sid, text in lines:
            m = scenes[sid][1]
            row = {"id": sid, "image_file": f"images/{sid}.tif", "mask_file": f"masks/{sid}.tif",
                   "image_size": [h, w], "sentence": text}
            row.update(mask_digest((m > 50).astype(np.uint8)))
            rows.append(row)
        expected[split] = rows
    write_json(expected, ds / "expected.json")


# --------------------------------------------------------------------------- RISBench


def build_risbench(root: pathlib.Path) -> None:
    ds = root / "risbench"
    h = w = 32
    scenes = {}

    m = np.zeros((h, w), dtype=np.uint8)
    m[5:14, 18:29] = 255
    m[13, 28] = 1            # value 1 > 0: foreground
    img = textured(h, w, (95, 125, 85), 6, seed=201)
    paint(img, (m > 0).astype(np.uint8), (40, 90, 200))
    scenes["20118_0064.png"] = (img, m)

    m = disk(h, w, 20, 12, 7.0) * 255
    m = m.astype(np.uint8)
    img = textured(h, w, (120, 120, 110), 6, seed=202)
    paint(img, (m > 0).astype(np.uint8), (230, 230, 230))
    scenes["P0007_0512_1024.png"] = (img, m)

    m = np.zeros((h, w), dtype=np.uint8)
    m[26:30, 2:30] = 1       # a mask stored as 0/1 (foreground is any value > 0)
    img = textured(h, w, (70, 100, 60), 6, seed=203)
    paint(img, (m > 0).astype(np.uint8), (110, 80, 50))
    scenes["dota_33.png"] = (img, m)

    for name, (img, m) in scenes.items():
        save_png(img, ds / "img_rgb" / name)
        save_png(m, ds / "mask" / name)

    splits = {
        "train": [("20118_0064.png", "the blue roof building at the top right"),
                  ("P0007_0512_1024.png", "a round white storage tank on the lower left"),
                  ("20118_0064.png", "blue roof")],
        "test": [("dota_33.png", "the dirt road along the bottom of the image"),
                 ("P0007_0512_1024.png", "white tank, left side, 1 of 1")],
    }
    expected = {"dataset": "risbench", "generator": "tools/make_dataset_fixtures.py",
                "foreground": "mask value > 0",
                "mask_digest": "sha256 of the row-major uint8 0/1 mask",
                "missing_splits": ["val"], "val": None}
    for split, lines in splits.items():
        write_text([f"{name} {text}" for name, text in lines], ds / f"output_phrase_{split}.txt")
        rows = []
        for name, text in lines:
            m = scenes[name][1]
            row = {"file": name, "image_file": f"img_rgb/{name}", "mask_file": f"mask/{name}",
                   "image_size": [h, w], "sentence": text}
            row.update(mask_digest((m > 0).astype(np.uint8)))
            rows.append(row)
        expected[split] = rows
    write_json(expected, ds / "expected.json")


# --------------------------------------------------------------------------- main


def build_all(root: pathlib.Path) -> None:
    for sub in SUBDIRS:
        if (root / sub).exists():
            shutil.rmtree(root / sub)
    build_rrsisd(root)
    build_refsegrs(root)
    build_risbench(root)


def same_tree(a: pathlib.Path, b: pathlib.Path) -> list[str]:
    diffs = []
    for sub in SUBDIRS:
        files_a = sorted(p.relative_to(a) for p in (a / sub).rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b) for p in (b / sub).rglob("*") if p.is_file())
        if files_a != files_b:
            diffs.append(f"{sub}: file lists differ")
            continue
        for rel in files_a:
            if not filecmp.cmp(a / rel, b / rel, shallow=False):
                diffs.append(str(rel))
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=FIXTURES)
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare with --out byte for byte")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build_all(pathlib.Path(tmp))
            diffs = same_tree(args.out, pathlib.Path(tmp))
        if diffs:
            print("differs:", *diffs, sep="\n  ")
            return 1
        print("fixtures are up to date")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    build_all(args.out)
    total = sum(p.stat().st_size for sub in SUBDIRS for p in (args.out / sub).rglob("*")
                if p.is_file())
    print(f"wrote {', '.join(SUBDIRS)} under {os.path.relpath(args.out, REPO)} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
