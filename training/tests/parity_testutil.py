"""A bundle whose fixture image is resized by every view, from a small random-weight model.

    /usr/bin/python3 tests/parity_testutil.py --out DIR

exports one (the Go parity test, cascade/parity_test.go TestParityResized, uses it):
model_testutil's small HTC with a 320x320 test scale, its fixture image a 400x300 frame
(the single view resizes it to 320x240; TTA: 320 and 416, each with flip), and the three
fixture plans of htc.export (single; tta; tta_probs). The bundled default model's fixture
image is already 320x240, which no view resizes.

Random weights give near-uniform scores (all RPN objectness about 0.5, every class about
1/(C+1)), where a float rounding difference reorders near-equal proposals or decides NMS
ties. The output layers here are drawn wider (seeded) so that scores are spread out and
the test outputs are well defined.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from htc import export  # noqa: E402
from htc.model import build_model  # noqa: E402
from htc.model.tta import View, predict_aug  # noqa: E402
from model_testutil import small_config  # noqa: E402

THINGS = ["circle", "square", "star"]
STUFF = ["sky", "grass"]


def frame(h: int = 300, w: int = 400, seed: int = 1) -> np.ndarray:
    """Flat shapes on noise, uint8 [H, W, 3]."""
    g = np.random.default_rng(seed)
    img = (g.random((h, w, 3)) * 60).astype(np.uint8)
    img[30:120, 40:150] = (220, 40, 40)
    img[160:280, 220:370] = (40, 220, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 90) ** 2 + (xx - 300) ** 2 < 45 ** 2] = (40, 40, 220)
    img[(yy - 220) ** 2 + (xx - 90) ** 2 < 30 ** 2] = (230, 230, 60)
    return img


def random_model(image: np.ndarray, seed: int = 0, dcn: bool = False):
    """The small HTC from seeded random weights, its output layers rescaled on ``image`` so
    that their outputs have a chosen spread (RPN objectness logits std 1, class logits std 1.5
    plus a bias, mask logits std 3, deltas std 0.1). With ``dcn`` the backbone is a ResNet-50
    shape with deformable convs in layer2-4 (htc.dcn), their offsets spread to std 1 px so
    that the taps really sample between pixels."""
    torch.manual_seed(seed)
    cfg = small_config(backbone={"depth": 50, "dcn": {"stages": [False, True, True, True], "deform_groups": 1}}) \
        if dcn else small_config()
    cfg.data.test_scale = [320, 320]
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    outs: Dict[str, List[torch.Tensor]] = {}
    layers = {"rpn_cls": (model.rpn_head.rpn_cls, 1.0), "rpn_reg": (model.rpn_head.rpn_reg, 0.1)}
    for t, head in enumerate(model.roi_head.bbox_head):
        layers[f"cls{t}"] = (head.fc_cls, 1.5)
        layers[f"reg{t}"] = (head.fc_reg, 0.1)
    for t, head in enumerate(model.roi_head.mask_head):
        layers[f"mask{t}"] = (head.conv_logits, 3.0)
    for name, mod in model.backbone.named_modules():
        if name.endswith("conv2.conv_offset"):
            layers[name] = (mod, 1.0)
    with torch.no_grad():
        for layer, _ in layers.values():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
            layer.bias.zero_()
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: outs.setdefault(k, []).append(o.detach()))
             for k, (layer, _) in layers.items()]
    views = [View((320, 320), False)]
    # one pass: with zero biases, rescaling keeps the order of the objectness logits; the heads'
    # inputs move only with the rescaled deltas, so their spreads land near the targets
    predict_aug(model, image, views, mean=cfg.data.mean, std=cfg.data.std)
    with torch.no_grad():
        for k, (layer, target) in layers.items():
            o = torch.cat([x.flatten() for x in outs[k]])
            layer.weight.mul_(target / max(float(o.std()), 1e-12))
    with torch.no_grad():
        for t, head in enumerate(model.roi_head.bbox_head):
            head.fc_cls.bias.copy_(torch.randn(head.fc_cls.bias.shape, generator=g) * 0.5)
    for h in hooks:
        h.remove()
    return model, cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dcn", action="store_true", help="deformable convs in the backbone's layer2-4 (DCN c3-c5)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = out / "frame.png"
    Image.fromarray(frame(), mode="RGB").save(image)
    model, cfg = random_model(frame(), dcn=args.dcn)
    export.export_bundle(model, cfg, out, name="parity_random_dcn" if args.dcn else "parity_random", things=THINGS, stuff=STUFF, fixture_image=image,
                         tta_scales=[[320, 320], [416, 416]])
    image.unlink()
    print(f"parity_testutil: wrote {out} in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
