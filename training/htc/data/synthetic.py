"""Seeded synthetic data in COCO format: shapes over textured stuff regions.

Nothing may be downloaded on these machines, so training, evaluation and the
end-to-end video tests run on data made here. The scenes are built to exercise
what HTC is for:

* five thing classes that differ only by shape (colour and texture are drawn
  at random per object, so neither gives the class away);
* sizes from tiny (< 16 px) to large (> 96 px), so COCO's small / medium /
  large split is populated;
* occlusion: later objects are drawn over earlier ones and each instance's
  mask is its visible part; instances left with too few visible pixels are
  dropped and their pixels marked 255 (ignore) in the semantic map;
* crowd regions (iscrowd=1): clusters of tiny objects annotated as one region;
* four stuff classes (sky, grass, water, wall), each with its own texture,
  giving the semantic branch a COCO-stuff-like label map.

Layout written by :func:`write_dataset` (COCO / COCO-stuff conventions)::

    DIR/images/{train,val}/000001.png
    DIR/annotations/instances_{train,val}.json
    DIR/stuffthingmaps/{train,val}/000001.png   # semantic ids, 255 = ignore

Semantic ids: things 0..C-1 (category id - 1), stuff C..C+K-1, 255 ignore.
The JSON carries ``categories`` (ids 1..C) and ``stuff_categories`` (names).

:func:`write_video` renders moving, occluding objects to an H.264 mp4 through
the ffmpeg CLI, with per-frame ground truth (one COCO image per frame, id =
frame index + 1) in a JSON beside it.

CLI::

    python -m htc.data.synthetic --out DIR --seed 0 --train 400 --val 100
    python -m htc.data.synthetic --video out.mp4 --frames 150 --fps 15 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image

from ..evaluation import rle as rle_mod

THING_CLASSES = ("circle", "square", "triangle", "star", "ring")
STUFF_CLASSES = ("sky", "grass", "water", "wall")
NUM_THINGS = len(THING_CLASSES)
SKY, GRASS, WATER, WALL = range(len(STUFF_CLASSES))
IGNORE = 255

# Visible parts smaller than this, or smaller than this fraction of the
# object's in-frame area, are too ambiguous to annotate.
MIN_VISIBLE_AREA = 12
MIN_VISIBLE_FRACTION = 0.2

# Diameter bands, roughly COCO's small / medium / large (area 32^2, 96^2
# for a disc) and about COCO's mix of them; occlusion and frame edges then
# shrink some visible areas into the band below.
SIZE_BANDS = ((8.0, 36.0), (36.0, 110.0), (120.0, 1e9))
SIZE_BAND_P = (0.35, 0.35, 0.3)

_SPLIT_CODE = {"train": 1, "val": 2, "video": 3}


def categories() -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(THING_CLASSES)]


# --------------------------------------------------------------------------
# small numpy helpers


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a coarse [gh,gw] grid to [h,w] (smooth noise)."""
    gh, gw = grid.shape
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _polygon_mask(vx: np.ndarray, vy: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test at the given pixel centres."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (y0 > py) != (y1 > py)
        xint = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < xint)
    return inside


# --------------------------------------------------------------------------
# things


@dataclass
class Style:
    """How an object is painted; texture coordinates move with the object."""

    kind: str  # solid | stripes | checker | noise
    c1: np.ndarray
    c2: np.ndarray
    period: float
    angle: float
    tile: np.ndarray  # [32,32,3] noise tile for kind == "noise"

    @staticmethod
    def random(rng: np.random.Generator) -> "Style":
        kind = str(rng.choice(["solid", "stripes", "checker", "noise"]))
        c1 = rng.uniform(0, 255, 3)
        c2 = rng.uniform(0, 255, 3)
        # Keep two-tone textures visibly two-tone.
        if np.abs(c1 - c2).sum() < 120:
            c2 = 255.0 - c1
        tile = np.clip(c1[None, None, :] + rng.normal(0, 35, (32, 32, 3)), 0, 255)
        return Style(kind, c1, c2, float(rng.uniform(3, 10)), float(rng.uniform(0, math.pi)), tile)

    def paint(self, px: np.ndarray, py: np.ndarray, cx: float, cy: float) -> np.ndarray:
        """RGB float [.., 3] at pixel centres (px, py) for an object centred at (cx, cy)."""
        u = px - cx
        v = py - cy
        if self.kind == "solid":
            shade = 1.0 + 0.15 * np.tanh((u + v) / 40.0)
            return np.clip(self.c1 * shade[..., None], 0, 255)
        if self.kind == "stripes":
            s = (u * math.cos(self.angle) + v * math.sin(self.angle)) / self.period
            sel = (np.floor(s).astype(np.int64) % 2 == 0)[..., None]
            return np.where(sel, self.c1, self.c2)
        if self.kind == "checker":
            sel = ((np.floor(u / self.period) + np.floor(v / self.period)).astype(np.int64) % 2 == 0)[..., None]
            return np.where(sel, self.c1, self.c2)
        iu = np.floor(u).astype(np.int64) % self.tile.shape[1]
        iv = np.floor(v).astype(np.int64) % self.tile.shape[0]
        return self.tile[iv, iu]


@dataclass
class Thing:
    label: int  # 0..C-1
    cx: float
    cy: float
    diameter: float
    angle: float
    hole: float  # inner/outer radius of a ring
    style: Style

    @staticmethod
    def random(rng: np.random.Generator, h: int, w: int, min_size: float, max_size: float, label: int | None = None) -> "Thing":
        lbl = int(rng.integers(NUM_THINGS)) if label is None else label
        # log-uniform sizes: as many tiny as large objects per octave
        d = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
        return Thing(
            label=lbl,
            cx=float(rng.uniform(0, w)),
            cy=float(rng.uniform(0, h)),
            diameter=d,
            angle=float(rng.uniform(0, 2 * math.pi)),
            hole=float(rng.uniform(0.45, 0.65)),
            style=Style.random(rng),
        )

    def window(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        r = self.diameter / 2 + 1
        x0, x1 = max(0, int(math.floor(self.cx - r))), min(w, int(math.ceil(self.cx + r)) + 1)
        y0, y1 = max(0, int(math.floor(self.cy - r))), min(h, int(math.ceil(self.cy + r)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, y0, x1, y1

    def shape_mask(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        r = self.diameter / 2
        name = THING_CLASSES[self.label]
        if name in ("circle", "ring"):
            d2 = (px - self.cx) ** 2 + (py - self.cy) ** 2
            m = d2 <= r * r
            if name == "ring":
                m &= d2 >= (self.hole * r) ** 2
            return m
        if name == "square":
            k = np.arange(4)
            ang = self.angle + math.pi / 4 + k * math.pi / 2
            rad = np.full(4, r)
        elif name == "triangle":
            k = np.arange(3)
            ang = self.angle + k * 2 * math.pi / 3
            rad = np.full(3, r)
        elif name == "star":
            k = np.arange(10)
            ang = self.angle + k * math.pi / 5
            rad = np.where(k % 2 == 0, r, 0.45 * r)
        else:
            raise ValueError(f"unknown shape {name}")
        return _polygon_mask(self.cx + rad * np.cos(ang), self.cy + rad * np.sin(ang), px, py)

    def draw(self, img: np.ndarray) -> np.ndarray:
        """Paint onto img [H,W,3] float in place; returns the full-frame mask."""
        h, w = img.shape[:2]
        mask = np.zeros((h, w), dtype=bool)
        win = self.window(h, w)
        if win is None:
            return mask
        x0, y0, x1, y1 = win
        py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        m = self.shape_mask(px, py)
        if not m.any():
            return mask
        colour = self.style.paint(px, py, self.cx, self.cy)
        sub = img[y0:y1, x0:x1]
        sub[m] = colour[m]
        mask[y0:y1, x0:x1] = m
        return mask


@dataclass
class CrowdGroup:
    """A cluster of tiny same-class objects, annotated as one iscrowd region."""

    members: list

    @staticmethod
    def random(rng: np.random.Generator, h: int, w: int) -> "CrowdGroup":
        label = int(rng.integers(NUM_THINGS))
        cx, cy = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
        spread = rng.uniform(10, 22)
        style = Style.random(rng)
        members = []
        for _ in range(int(rng.integers(8, 17))):
            t = Thing.random(rng, h, w, 4.0, 8.0, label=label)
            t.cx = float(cx + rng.normal(0, spread))
            t.cy = float(cy + rng.normal(0, spread * 0.6))
            t.style = style
            members.append(t)
        return CrowdGroup(members)

    @property
    def label(self) -> int:
        return self.members[0].label

    def draw(self, img: np.ndarray) -> np.ndarray:
        mask = np.zeros(img.shape[:2], dtype=bool)
        for t in self.members:
            mask |= t.draw(img)
        return mask


# --------------------------------------------------------------------------
# stuff


@dataclass
class Background:
    """Stuff layout and the textures' random parameters (fixed per scene)."""

    labels: np.ndarray  # [H,W] stuff index 0..K-1
    sky_top: np.ndarray
    sky_bottom: np.ndarray
    clouds: np.ndarray  # [H,W] 0..1
    grass: np.ndarray  # base colour
    grass_noise: np.ndarray  # [H,W,3]
    grass_freq: float
    water: np.ndarray
    water_freq: float
    water_phase: float
    brick: np.ndarray  # [H,W,3] wall texture

    @staticmethod
    def random(rng: np.random.Generator, h: int, w: int) -> "Background":
        py, px = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        horizon = h * rng.uniform(0.2, 0.55) + h * 0.05 * np.sin(
            2 * math.pi * px / (w * rng.uniform(0.5, 1.5)) + rng.uniform(0, 2 * math.pi)
        )
        split = w * rng.uniform(0.2, 0.8) + w * 0.06 * np.sin(
            2 * math.pi * py / (h * rng.uniform(0.5, 1.5)) + rng.uniform(0, 2 * math.pi)
        )
        left, right = (GRASS, WATER) if rng.random() < 0.5 else (WATER, GRASS)
        if rng.random() < 0.3:
            right = left
        labels = np.where(py < horizon, SKY, np.where(px < split, left, right)).astype(np.int64)
        if rng.random() < 0.6:
            ww = w * rng.uniform(0.15, 0.4)
            wx = rng.uniform(0, w - ww)
            top = h * rng.uniform(0.05, 0.5)
            labels[(px >= wx) & (px < wx + ww) & (py >= top)] = WALL

        # bricks: rows offset by half a brick, mortar lines, per-brick tint
        bh, bw = rng.uniform(6, 12), rng.uniform(14, 26)
        row = np.floor(py / bh)
        xo = px + (row % 2) * bw / 2
        col = np.floor(xo / bw)
        mortar = ((py % bh) < 1.2) | ((xo % bw) < 1.2)
        base = np.array([150.0, 62.0, 45.0]) + rng.uniform(-25, 25, 3)
        tint = np.sin(row * 12.9898 + col * 78.233) * 43758.5453
        tint = (tint - np.floor(tint))[..., None] * 40 - 20
        brick = np.where(mortar[..., None], np.array([185.0, 180.0, 170.0]), base + tint)

        gh, gw = max(2, h // 24), max(2, w // 24)
        clouds = np.clip(_upsample(rng.random((gh, gw)), h, w) * 2.2 - 1.2, 0, 1)
        return Background(
            labels=labels,
            sky_top=np.array([60.0, 110.0, 210.0]) + rng.uniform(-20, 20, 3),
            sky_bottom=np.array([170.0, 200.0, 240.0]) + rng.uniform(-15, 15, 3),
            clouds=clouds,
            grass=np.array([60.0, 140.0, 50.0]) + rng.uniform(-20, 20, 3),
            grass_noise=rng.normal(0, 18, (h, w, 3)),
            grass_freq=float(rng.uniform(0.6, 1.4)),
            water=np.array([30.0, 95.0, 165.0]) + rng.uniform(-20, 20, 3),
            water_freq=float(rng.uniform(0.4, 0.9)),
            water_phase=float(rng.uniform(0, 2 * math.pi)),
            brick=brick,
        )

    def render(self, t: float = 0.0) -> np.ndarray:
        """RGB float [H,W,3]; t animates the water (frames of a video)."""
        h, w = self.labels.shape
        py, px = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        fy = (py / h)[..., None]
        sky = self.sky_top * (1 - fy) + self.sky_bottom * fy
        sky = sky * (1 - self.clouds[..., None]) + 245.0 * self.clouds[..., None]
        blades = 18 * np.sin(px * self.grass_freq * 2.1 + 3 * np.sin(py * 0.15))
        grass = self.grass + self.grass_noise + blades[..., None] * np.array([0.6, 1.0, 0.4])
        ripple = np.sin(py * self.water_freq + 2 * np.sin(px * 0.07 + self.water_phase + t * 0.3) - t * 0.5)
        water = self.water + (22 * ripple)[..., None] * np.array([0.6, 0.8, 1.0])
        layers = np.stack([sky, grass, water, self.brick])  # indexed by stuff id
        img = np.take_along_axis(layers, self.labels[None, :, :, None].repeat(3, axis=3), axis=0)[0]
        return np.clip(img, 0, 255)


# --------------------------------------------------------------------------
# scenes


def _visible(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each mask when later masks are drawn on top."""
    out: list[np.ndarray] = [None] * len(masks)  # type: ignore[list-item]
    covered = np.zeros_like(masks[0]) if masks else None
    for i in range(len(masks) - 1, -1, -1):
        out[i] = masks[i] & ~covered
        covered |= masks[i]
    return out


def compose(bg: Background, objects: list, t: float = 0.0):
    """Render objects over the background, back to front.

    Returns (image uint8 [H,W,3], semantic uint8 [H,W], instances) where
    instances is a list of (label, visible mask, iscrowd) for annotated
    objects, in drawing order.
    """
    img = bg.render(t)
    semantic = (bg.labels + NUM_THINGS).astype(np.uint8)
    masks = [o.draw(img) for o in objects]
    instances = []
    if objects:
        for o, full, vis in zip(objects, masks, _visible(masks)):
            n_vis = int(vis.sum())
            crowd = isinstance(o, CrowdGroup)
            keep = n_vis >= MIN_VISIBLE_AREA and (crowd or n_vis >= MIN_VISIBLE_FRACTION * int(full.sum()))
            if keep:
                semantic[vis] = o.label
                instances.append((o.label, vis, 1 if crowd else 0))
            else:
                semantic[vis] = IGNORE
    return np.round(img).astype(np.uint8), semantic, instances


def random_scene(rng: np.random.Generator, h: int, w: int, crowd: bool, min_objects: int = 2, max_objects: int = 8):
    bg = Background.random(rng, h, w)
    objects: list = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        lo, hi = SIZE_BANDS[int(rng.choice(len(SIZE_BANDS), p=SIZE_BAND_P))]
        hi = min(hi, 0.85 * min(h, w))
        objects.append(Thing.random(rng, h, w, min(lo, hi), hi))
    if crowd:
        objects.insert(int(rng.integers(0, len(objects) + 1)), CrowdGroup.random(rng, h, w))
    return bg, objects


def _annotation(ann_id: int, image_id: int, label: int, mask: np.ndarray, iscrowd: int) -> dict:
    if iscrowd:
        # COCO stores crowd regions as uncompressed RLE
        counts = rle_mod.encode_counts(mask)
        segm = {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}
    else:
        segm = rle_mod.encode(mask)
    bbox = rle_mod.to_bbox(segm)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": label + 1,
        "segmentation": segm,
        "area": float(rle_mod.area(segm)),
        "bbox": [float(v) for v in bbox],
        "iscrowd": int(iscrowd),
    }


def _coco_header(description: str, extra: dict) -> dict:
    return {
        "info": {"description": description, **extra},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": categories(),
        "stuff_categories": list(STUFF_CLASSES),
    }


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # One stream per image, so the first N images do not depend on how many
    # are generated in total.
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def generate_split(out: Path, split: str, count: int, seed: int, width: int, height: int,
                   on_image: Optional[Callable[[int], None]] = None) -> dict:
    """Write one split's images and label maps; returns its COCO dict. ``on_image(n)`` is
    called after the n-th image (1-based), for a progress display.

    The annotation file comes last and appears whole (a rename), so its presence
    means the split is complete."""
    img_dir = out / "images" / split
    seg_dir = out / "stuffthingmaps" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    seg_dir.mkdir(parents=True, exist_ok=True)
    coco = _coco_header(f"htcstream synthetic shapes ({split})", {"seed": seed, "split": split})
    ann_id = 1
    for i in range(count):
        rng = image_rng(seed, split, i)
        # every fourth image (from the second) has a crowd region, so even a
        # handful of images includes one
        bg, objects = random_scene(rng, height, width, crowd=(i % 4 == 1))
        img, semantic, instances = compose(bg, objects)
        image_id = i + 1
        name = f"{image_id:06d}.png"
        Image.fromarray(img, "RGB").save(img_dir / name)
        Image.fromarray(semantic, "L").save(seg_dir / name)
        coco["images"].append({"id": image_id, "file_name": name, "height": height, "width": width})
        for label, vis, iscrowd in instances:
            coco["annotations"].append(_annotation(ann_id, image_id, label, vis, iscrowd))
            ann_id += 1
        if on_image is not None:
            on_image(i + 1)
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    ann = ann_dir / f"instances_{split}.json"
    tmp = ann.with_name(ann.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    os.replace(tmp, ann)
    return coco


def write_dataset(out: str | os.PathLike, seed: int = 0, train: int = 400, val: int = 100, width: int = 320, height: int = 240) -> dict:
    """Generate train and val splits under ``out``; returns {split: coco dict}."""
    out = Path(out)
    res = {}
    for split, n in (("train", train), ("val", val)):
        if n > 0:
            res[split] = generate_split(out, split, n, seed, width, height)
    return res


# --------------------------------------------------------------------------
# video


@dataclass
class Mover:
    thing: Thing
    vx: float
    vy: float
    spin: float
    pulse: float  # relative size change amplitude
    pulse_phase: float
    base_diameter: float


def _video_scene(seed: int, width: int, height: int):
    rng = image_rng(seed, "video", 0)
    bg = Background.random(rng, height, width)
    movers = []
    for _ in range(int(rng.integers(5, 9))):
        lo, hi = SIZE_BANDS[int(rng.choice(len(SIZE_BANDS), p=SIZE_BAND_P))]
        hi = min(hi, 0.6 * min(height, width))
        t = Thing.random(rng, height, width, min(max(lo, 12.0), hi), hi)
        speed = rng.uniform(1.0, 4.0)
        heading = rng.uniform(0, 2 * math.pi)
        movers.append(
            Mover(t, speed * math.cos(heading), speed * math.sin(heading), float(rng.uniform(-0.05, 0.05)),
                  float(rng.uniform(0.0, 0.2)), float(rng.uniform(0, 2 * math.pi)), t.diameter)
        )
    return bg, movers


def video_frames(frames: int, seed: int = 0, width: int = 320, height: int = 240) -> Iterator[tuple]:
    """Yield (rgb uint8 [H,W,3], instances) per frame; see :func:`compose`."""
    bg, movers = _video_scene(seed, width, height)
    margin = 0.1
    for f in range(frames):
        for m in movers:
            t = m.thing
            t.diameter = m.base_diameter * (1 + m.pulse * math.sin(0.1 * f + m.pulse_phase))
            t.angle += m.spin
        img, _, instances = compose(bg, [m.thing for m in movers], t=float(f))
        yield img, instances
        for m in movers:
            t = m.thing
            t.cx += m.vx
            t.cy += m.vy
            # bounce a little outside the frame, so objects also get cut by its edge
            if not -margin * width <= t.cx <= (1 + margin) * width:
                m.vx = -m.vx
            if not -margin * height <= t.cy <= (1 + margin) * height:
                m.vy = -m.vy


def write_video(path: str | os.PathLike, frames: int = 150, fps: int = 15, seed: int = 0, width: int = 320,
                height: int = 240, ffmpeg: str | None = None) -> dict:
    """Encode the synthetic video to ``path`` (H.264 mp4) and its ground truth to ``path`` with .json."""
    if width % 2 or height % 2:
        raise ValueError(f"video size must be even for yuv420p, got {width}x{height}")
    if frames < 1 or fps < 1:
        raise ValueError("frames and fps must be positive")
    ffmpeg = ffmpeg or shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        ffmpeg, "-y", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "16",
        "-g", str(fps), "-threads", "1",
        # bit-exact flags keep the file identical for the same seed
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-movflags", "+faststart", str(path),
    ]
    coco = _coco_header("htcstream synthetic video", {"seed": seed, "fps": fps, "frames": frames, "video": path.name})
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise RuntimeError(f"cannot run ffmpeg ({ffmpeg}): {e}; install ffmpeg or pass its path") from e
    ann_id = 1
    try:
        for f, (img, instances) in enumerate(video_frames(frames, seed, width, height)):
            proc.stdin.write(img.tobytes())
            coco["images"].append({"id": f + 1, "file_name": f"frame_{f:05d}.png", "height": height,
                                   "width": width, "frame_index": f})
            for label, vis, iscrowd in instances:
                coco["annotations"].append(_annotation(ann_id, f + 1, label, vis, iscrowd))
                ann_id += 1
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg exited early; its exit code and stderr say why, below
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read().decode(errors="replace")
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"ffmpeg failed writing {path} (exit {rc}): {err.strip()}")
    with open(path.with_suffix(".json"), "w", encoding="utf-8") as fjson:
        json.dump(coco, fjson)
    return coco


# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m htc.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="dataset directory to write (images/, annotations/, stuffthingmaps/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=400, help="number of training images")
    p.add_argument("--val", type=int, default=100, help="number of validation images")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--video", help="also write a synthetic mp4 here (ground truth beside it as .json)")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--fps", type=int, default=15)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.out and not args.video:
        print("synthetic: nothing to do; give --out DIR and/or --video FILE.mp4", file=sys.stderr)
        return 2
    if args.width < 16 or args.height < 16:
        print("synthetic: --width and --height must be at least 16", file=sys.stderr)
        return 2
    if args.out:
        res = write_dataset(args.out, args.seed, args.train, args.val, args.width, args.height)
        for split, coco in res.items():
            print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} annotations -> {args.out}")
    if args.video:
        try:
            coco = write_video(args.video, args.frames, args.fps, args.seed, args.width, args.height)
        except (RuntimeError, ValueError) as e:
            print(f"synthetic: {e}", file=sys.stderr)
            return 1
        print(f"video: {len(coco['images'])} frames, {len(coco['annotations'])} annotations -> {args.video}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
