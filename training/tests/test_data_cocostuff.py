"""COCO / COCO-stuff label tables (htc.data.cocostuff)."""

from htc.data import cocostuff as cs

# mmdetection's CocoDataset.CLASSES, as published.
MMDET_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def test_thing_names_match_mmdetection():
    assert cs.COCO_THING_NAMES == MMDET_CLASSES


def test_thing_ids_have_the_coco_gaps():
    assert len(cs.COCO_THING_IDS) == 80
    assert cs.COCO_THING_IDS[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert cs.COCO_THING_IDS[-1] == 90
    gaps = sorted(set(range(1, 92)) - set(cs.COCO_THING_IDS))
    assert gaps == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]
    names = [cs.COCOSTUFF_NAMES[i - 1] for i in gaps]
    assert names == ["street sign", "hat", "shoe", "eye glasses", "plate", "mirror",
                     "window", "desk", "door", "blender", "hair brush"]


def test_channel_names_follow_cocostuff_ids():
    n = cs.COCOSTUFF_NAMES
    assert len(n) == 183 and len(set(n)) == 183
    assert n[0] == "person"            # id 1
    assert n[89] == "toothbrush"       # id 90
    assert n[91] == "banner"           # id 92, first stuff
    assert n[95] == "building-other"   # id 96
    assert n[156] == "sky-other"       # id 157
    assert n[181] == "wood"            # id 182, last stuff
    assert n[182] == "other"
    assert cs.cocostuff_channel(157) == 156


def test_stuff_mask():
    mask = cs.cocostuff_stuff_mask()
    assert len(mask) == 183
    assert not any(mask[:91])
    assert all(mask[91:])
    assert sum(mask) == 92  # 91 stuff classes + "other"
    assert cs.is_stuff_channel(91) and not cs.is_stuff_channel(90)


def test_thing_label_to_channel():
    assert cs.thing_label_to_channel(0) == 0          # person
    assert cs.thing_label_to_channel(11) == 12        # stop sign, id 13
    assert cs.thing_label_to_channel(79) == 89        # toothbrush, id 90
    for label, name in enumerate(cs.COCO_THING_NAMES):
        assert cs.COCOSTUFF_NAMES[cs.thing_label_to_channel(label)] == name
