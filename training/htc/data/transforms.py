"""Training/test transforms on (image, target) pairs, and the batch collate.

Every transform maps ``(image, target) -> (image, target)``. Before
normalisation ``image`` is a float32 tensor [3,H,W] of RGB values 0..255;
``target`` holds the fields of the data contract (boxes xyxy, labels, masks
uint8 [N,H,W], semantic int64 [H,W], iscrowd, image_id, orig_size, img_size,
scale_factor, flip; ``resize`` makes scale_factor the pair (x, y) of resized /
original size per axis). Each geometric change moves the boxes, the instance
masks and the semantic map together with the image.

Random choices use torch's generator (or the one passed in): DataLoader
workers seed torch differently per worker, numpy's global state they would
share.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Target = dict
Transform = Callable[[torch.Tensor, Target], tuple]

DEFAULT_MEAN = (123.675, 116.28, 103.53)
DEFAULT_STD = (58.395, 57.12, 57.375)


class Compose:
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int, float]:
    """New (h, w) and factor for a keep-ratio resize to ``scale`` (mmcv rescale_size).

    ``scale`` is (long edge max, short edge max) in either order; the image is
    made as large as fits both.
    """
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5), factor


class Resize:
    """Keep-ratio resize, single- or multi-scale (mmdetection ``Resize``).

    ``img_scale``: one (w, h)-style pair such as (1333, 800), or a list of them.
    With several, ``multiscale_mode="range"`` draws the long edge and the short
    edge uniformly between the pairs' extremes (the HTC paper's multi-scale
    training), ``"value"`` picks one of the listed pairs.
    """

    def __init__(self, img_scale, multiscale_mode: str = "range", generator: torch.Generator | None = None):
        scales = [tuple(int(v) for v in img_scale)] if isinstance(img_scale[0], (int, float)) else [
            tuple(int(v) for v in s) for s in img_scale
        ]
        for s in scales:
            if len(s) != 2 or min(s) <= 0:
                raise ValueError(f"Resize: each img_scale must be two positive sizes, got {s}")
        if multiscale_mode not in ("range", "value"):
            raise ValueError(f"Resize: multiscale_mode must be 'range' or 'value', got {multiscale_mode!r}")
        if multiscale_mode == "range" and len(scales) not in (1, 2):
            raise ValueError("Resize: 'range' mode needs one or two img_scale pairs")
        self.scales = scales
        self.mode = multiscale_mode
        self.generator = generator

    def _randint(self, lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=self.generator).item())

    def sample_scale(self) -> tuple[int, int]:
        if len(self.scales) == 1:
            return self.scales[0]
        if self.mode == "value":
            return self.scales[self._randint(0, len(self.scales) - 1)]
        longs = [max(s) for s in self.scales]
        shorts = [min(s) for s in self.scales]
        return self._randint(min(longs), max(longs)), self._randint(min(shorts), max(shorts))

    def __call__(self, image: torch.Tensor, target: Target):
        return resize(image, target, self.sample_scale())

    def __repr__(self) -> str:
        return f"Resize(img_scale={self.scales}, multiscale_mode={self.mode!r})"


def resize(image: torch.Tensor, target: Target, scale: tuple[int, int]):
    """Keep-ratio resize of image, boxes, masks and semantic map to ``scale``."""
    _, h, w = image.shape
    nh, nw, factor = rescale_size(h, w, scale)
    nh, nw = max(nh, 1), max(nw, 1)
    # bilinear without antialiasing, half-pixel centres: what cv2 INTER_LINEAR
    # (mmcv's default) does
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    t = dict(target)
    # Boxes follow the actual per-axis ratios, which the pixel grids (and so
    # the masks) follow; they differ from `factor` by under half a pixel.
    sx, sy = nw / w, nh / h
    boxes = t["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=t["boxes"].dtype)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, nw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, nh)
    t["boxes"] = boxes
    masks = t["masks"]
    if masks.shape[0] > 0:
        t["masks"] = F.interpolate(masks[None].float(), size=(nh, nw), mode="nearest")[0].to(torch.uint8)
    else:
        t["masks"] = torch.zeros((0, nh, nw), dtype=torch.uint8)
    sem = t["semantic"]
    t["semantic"] = F.interpolate(sem[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].to(torch.int64)
    t["img_size"] = (nh, nw)
    # per axis, (x, y), as mmdetection's Resize records it ([w, h, w, h]) and
    # HTC.predict, the TTA path and Go divide boxes by it
    prev = t.get("scale_factor", 1.0)
    px, py = (float(prev), float(prev)) if isinstance(prev, (int, float)) else (float(prev[0]), float(prev[1]))
    t["scale_factor"] = (px * sx, py * sy)
    return image, t


class RandomFlip:
    """Horizontal flip with probability ``flip_ratio``."""

    def __init__(self, flip_ratio: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= flip_ratio <= 1.0:
            raise ValueError(f"RandomFlip: flip_ratio must be in [0, 1], got {flip_ratio}")
        self.flip_ratio = flip_ratio
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target):
        if self.flip_ratio <= 0 or torch.rand((1,), generator=self.generator).item() >= self.flip_ratio:
            return image, target
        return hflip(image, target)

    def __repr__(self) -> str:
        return f"RandomFlip(flip_ratio={self.flip_ratio})"


def hflip(image: torch.Tensor, target: Target):
    """Mirror left-right: x -> W - x for boxes (pixel-edge coordinates)."""
    w = image.shape[-1]
    image = image.flip(-1)
    t = dict(target)
    b = t["boxes"]
    t["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    t["masks"] = t["masks"].flip(-1)
    t["semantic"] = t["semantic"].flip(-1)
    t["flip"] = not bool(t.get("flip", False))
    return image, t


class Normalize:
    """(rgb - mean) / std per channel."""

    def __init__(self, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"Normalize: need 3 means and 3 positive stds, got {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: torch.Tensor, target: Target):
        return (image - self.mean) / self.std, target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def build_transforms(train: bool, img_scale=None, multiscale_mode: str = "range", flip_ratio: float = 0.5,
                     generator: torch.Generator | None = None) -> Compose:
    """Geometric pipeline: resize (if ``img_scale``), then flip when training.

    Normalisation is not part of it: the dataset always applies it last.
    """
    ts: list[Transform] = []
    if img_scale is not None:
        ts.append(Resize(img_scale, multiscale_mode if train else "value", generator))
        if not train and len(ts[-1].scales) > 1:
            raise ValueError("test-time img_scale must be a single scale")
    if train and flip_ratio > 0:
        ts.append(RandomFlip(flip_ratio, generator))
    return Compose(ts)


def collate(batch: Sequence[tuple], size_divisor: int = 32):
    """Stack images zero-padded (bottom/right) to a multiple of ``size_divisor``.

    Returns (images float32 [B,3,Hp,Wp], list of targets). Targets keep their
    unpadded sizes; ``img_size`` tells the model where the padding starts.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    hmax = max(im.shape[1] for im in images)
    wmax = max(im.shape[2] for im in images)
    hp = -(-hmax // size_divisor) * size_divisor
    wp = -(-wmax // size_divisor) * size_divisor
    out = images[0].new_zeros((len(images), images[0].shape[0], hp, wp))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out, targets
