"""COCO and COCO-stuff label tables.

The semantic head of mmdetection's released HTC checkpoints has 183 channels
indexed by COCO-stuff id: channel ``i`` is COCO-stuff id ``i + 1``. The
"stuffthingmaps" PNGs hold ``id - 1`` per pixel (so a pixel value is a channel
index directly) and 255 for unlabeled pixels, which the loss ignores.

* ids 1-91 are things, with gaps: 11 COCO ids (12, 26, 29, 30, 45, 66, 68, 69,
  71, 83, 91) were never annotated in COCO detection, so the 80 detection
  classes are the other 80 ids and their channels are not contiguous;
* ids 92-182 are the 91 stuff classes (banner ... wood);
* channel 182 has no COCO-stuff id; mmdetection's head has it and we call it
  "other". It is never a training target (stuffthingmaps use 255 instead).

Names are those of COCO-stuff's ``labels.txt`` (nightrome/cocostuff), whose
thing names equal the COCO detection names (mmdetection's ``CLASSES``).
"""

from __future__ import annotations

# COCO-stuff id -> name, ids 1..182 (labels.txt; 0 "unlabeled" is pixel 255).
_COCOSTUFF_BY_ID = (
    # things, ids 1..91 (gaps included)
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "street sign", "stop sign",
    "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe",
    "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet",
    "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    "hair brush",
    # stuff, ids 92..182
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet",
    "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth",
    "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt",
    "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone",
    "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper",
    "snow", "solid-other", "stairs", "stone", "straw", "structural-other",
    "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other",
    "wood",
)

#: COCO ids 1-91 that COCO detection never annotated.
COCO_UNUSED_THING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)

#: Last thing id and first/last stuff id of COCO-stuff.
LAST_THING_ID = 91
FIRST_STUFF_ID = 92
LAST_STUFF_ID = 182

#: Name of channel 182 (no COCO-stuff id; mmdetection's 183rd semantic class).
OTHER_NAME = "other"

#: Number of semantic channels of a COCO-stuff head (182 ids + "other").
NUM_COCOSTUFF_CHANNELS = 183

#: Pixel value of unlabeled pixels in stuffthingmaps PNGs (ignored by the loss).
COCOSTUFF_IGNORE = 255

#: The 80 COCO detection category ids, ascending (instance label i <-> id).
COCO_THING_IDS = tuple(i for i in range(1, LAST_THING_ID + 1) if i not in COCO_UNUSED_THING_IDS)

#: The 80 COCO detection names in category-id order (mmdetection's CLASSES).
COCO_THING_NAMES = tuple(_COCOSTUFF_BY_ID[i - 1] for i in COCO_THING_IDS)

#: Semantic channel names: index i -> COCO-stuff id i + 1; index 182 "other".
COCOSTUFF_NAMES = _COCOSTUFF_BY_ID + (OTHER_NAME,)

assert len(_COCOSTUFF_BY_ID) == LAST_STUFF_ID
assert len(COCOSTUFF_NAMES) == NUM_COCOSTUFF_CHANNELS
assert len(COCO_THING_IDS) == len(COCO_THING_NAMES) == 80


def cocostuff_channel(cocostuff_id: int) -> int:
    """Semantic channel of a COCO-stuff id (1..182): ``id - 1``."""
    if not 1 <= cocostuff_id <= LAST_STUFF_ID:
        raise ValueError(f"COCO-stuff id {cocostuff_id} out of range 1..{LAST_STUFF_ID}")
    return cocostuff_id - 1


def is_stuff_channel(channel: int) -> bool:
    """True for stuff channels (ids 92-182, i.e. 91..181) and "other" (182)."""
    if not 0 <= channel < NUM_COCOSTUFF_CHANNELS:
        raise ValueError(f"channel {channel} out of range 0..{NUM_COCOSTUFF_CHANNELS - 1}")
    return channel >= FIRST_STUFF_ID - 1


def cocostuff_stuff_mask() -> list[bool]:
    """Per-channel stuff flags of the 183 channels (False = thing channel)."""
    return [is_stuff_channel(c) for c in range(NUM_COCOSTUFF_CHANNELS)]


def thing_label_to_channel(label: int) -> int:
    """Semantic channel of contiguous instance label 0..79 (COCO_THING_IDS)."""
    return COCO_THING_IDS[label] - 1


__all__ = [
    "COCO_THING_IDS",
    "COCO_THING_NAMES",
    "COCO_UNUSED_THING_IDS",
    "COCOSTUFF_IGNORE",
    "COCOSTUFF_NAMES",
    "FIRST_STUFF_ID",
    "LAST_STUFF_ID",
    "LAST_THING_ID",
    "NUM_COCOSTUFF_CHANNELS",
    "OTHER_NAME",
    "cocostuff_channel",
    "cocostuff_stuff_mask",
    "is_stuff_channel",
    "thing_label_to_channel",
]
