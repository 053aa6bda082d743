"""Test-time augmentation (scales x horizontal flip): mmdetection 2.x ``HybridTaskCascadeRoIHead.aug_test``.

The input is one 8-bit RGB frame, as the Go runtime receives it, and each view
is prepared the way Go prepares it (``infer.Preprocess``): resize the 8-bit
image bit for bit as OpenCV's INTER_LINEAR does (skipped when the size does not
change), mirror, normalise, zero-pad to the size divisor. Then, following the mmdetection code behind the paper's
numbers:

1. RPN per view; proposals mapped back to the frame (un-flip in the resized
   width, divide by the per-axis scale), concatenated, NMS at the RPN's IoU,
   the best ``test_max_proposals``: one shared proposal set. With a single
   view its own proposals are used as they are (the simple test).
2. Per view: shared proposals mapped into the view, box cascade; scores =
   softmax(mean of the stage logits); the last stage's boxes mapped back.
3. Boxes and scores averaged over views; class-wise NMS once.
4. Masks: per view the final boxes mapped into the view, mask cascade; every
   view x stage map un-flipped (width axis reversed) and averaged; pasted
   into the frame.

With one unflipped view this is exactly ``HTC.predict`` on that view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms

from ..data.transforms import DEFAULT_MEAN, DEFAULT_STD, rescale_size
from .box_ops import boxes_to_rois
from .postprocess import ensemble_scores, multiclass_nms, paste_masks


@dataclass(frozen=True)
class View:
    """One TTA view: a keep-ratio scale (long, short) and whether the frame is mirrored."""

    scale: Tuple[int, int]
    flip: bool = False


@dataclass
class PreparedView:
    """A view's network input and how it maps to the frame."""

    image: Tensor        # [3, Hp, Wp] normalised, zero-padded
    pixels: Tensor       # uint8 [3, h, w]: the resized (and mirrored) frame before normalisation
    height: int          # resized (unpadded) size
    width: int
    scale_x: float       # resized / frame, per axis
    scale_y: float
    flip: bool

    def to_frame(self, boxes: Tensor) -> Tensor:
        """[N, 4] view boxes -> frame pixels (mmdetection bbox_mapping_back)."""
        b = boxes.clone()
        if self.flip:
            b[:, 0] = self.width - boxes[:, 2]
            b[:, 2] = self.width - boxes[:, 0]
        return b / b.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])

    def to_view(self, boxes: Tensor) -> Tensor:
        """[N, 4] frame boxes -> view pixels (mmdetection bbox_mapping)."""
        b = boxes * boxes.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        if self.flip:
            b = torch.stack([self.width - b[:, 2], b[:, 1], self.width - b[:, 0], b[:, 3]], dim=1)
        return b


def _as_hwc_uint8(image: Union[Tensor, np.ndarray]) -> Tensor:
    t = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else image  # a copy: any strides
    if t.dtype != torch.uint8 or t.dim() != 3 or t.shape[2] != 3:
        raise ValueError(f"predict_aug: image must be uint8 [H, W, 3] RGB, got {tuple(t.shape)} {t.dtype}")
    return t


def resize_uint8(image: Tensor, height: int, width: int, method: str = "opencv") -> Tensor:
    """Resize a uint8 [3, H, W] image bilinearly (half-pixel centres, no antialiasing).

    ``method="opencv"`` reproduces cv2.resize(INTER_LINEAR) on 8-bit images bit for bit, as
    the Go runtime runs it (OpenCV 4's fixed-point path: 11-bit coefficients, the SIMD
    kernel's truncating vertical pass, the 2x2-average shortcut for exact halving); checked
    against gocv on random sizes. ``method="float"`` interpolates in float32 and rounds half up.
    The same size is returned unchanged (no resampling at all) either way.
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    if method == "float":
        out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
        return torch.floor(out + 0.5).clamp(0, 255).to(torch.uint8)
    if method != "opencv":
        raise ValueError(f"resize_uint8: method must be 'opencv' or 'float', got {method!r}")
    src = image.permute(1, 2, 0).numpy().astype(np.int64)  # [H, W, C]
    sh, sw, cn = src.shape
    if sh == 2 * height and sw == 2 * width:
        # cv::resize turns an exact halving into INTER_AREA's fast 2x2 average
        out = (src[0::2, 0::2] + src[0::2, 1::2] + src[1::2, 0::2] + src[1::2, 1::2] + 2) >> 2
        return torch.from_numpy(out.astype(np.uint8)).permute(2, 0, 1).contiguous()
    sx, a0, a1 = _cv_linear_taps(sw, width, clamp=True)
    sy, b0, b1 = _cv_linear_taps(sh, height, clamp=False)
    sx1 = np.minimum(sx + 1, sw - 1)
    rows = src[:, sx, :] * a0[None, :, None] + src[:, sx1, :] * a1[None, :, None]  # [H, w, C], x 2048
    r0 = rows[np.clip(sy, 0, sh - 1)]
    r1 = rows[np.clip(sy + 1, 0, sh - 1)]
    out = ((((r0 >> 4) * b0[:, None, None]) >> 16) + (((r1 >> 4) * b1[:, None, None]) >> 16) + 2) >> 2
    return torch.from_numpy(np.clip(out, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


def _cv_linear_taps(src: int, dst: int, *, clamp: bool):
    """OpenCV's INTER_LINEAR source index and fixed-point weights (x 2048) along one axis."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:  # columns clamp index and weight at both borders; rows only clamp the index
        low, high = s < 0, s >= src - 1
        f[low | high] = 0
        s[low] = 0
        s[high] = src - 1
    one = np.float32(2048)
    w0 = np.rint((np.float32(1) - f) * one).astype(np.int64)
    w1 = np.rint(f * one).astype(np.int64)
    return s, w0, w1


def prepare_view(image: Union[Tensor, np.ndarray], view: View, *, mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD, size_divisor: int = 32, resize: str = "opencv") -> PreparedView:
    """The network input of ``view`` for one uint8 RGB [H, W, 3] frame (Go's ``infer.Preprocess``)."""
    img = _as_hwc_uint8(image).permute(2, 0, 1)
    h, w = int(img.shape[1]), int(img.shape[2])
    nh, nw, _ = rescale_size(h, w, tuple(view.scale))
    nh, nw = max(nh, 1), max(nw, 1)
    img = resize_uint8(img, nh, nw, resize)
    if view.flip:
        img = img.flip(-1)
    x = (img.float() - torch.tensor(mean, dtype=torch.float32)[:, None, None]) \
        / torch.tensor(std, dtype=torch.float32)[:, None, None]
    hp = -(-nh // size_divisor) * size_divisor
    wp = -(-nw // size_divisor) * size_divisor
    padded = x.new_zeros((3, hp, wp))
    padded[:, :nh, :nw] = x
    return PreparedView(image=padded, pixels=img, height=nh, width=nw, scale_x=nw / w, scale_y=nh / h,
                        flip=bool(view.flip))


@torch.no_grad()
def predict_aug(model, image: Union[Tensor, np.ndarray], views: Sequence[Union[View, Tuple]], *,
                mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                size_divisor: int = 32, resize: str = "opencv", ensemble: str = "logits",
                stage_weights: Optional[Sequence[float]] = None,
                stages: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """HTC on one uint8 RGB [H, W, 3] frame with the TTA plan ``views`` (``View`` or (scale, flip)).

    ``ensemble`` / ``stage_weights`` combine the stages' class scores per view as Go's
    ``cascade.Ensemble`` (:func:`ensemble_scores`; default: softmax of the mean logits).
    ``stages`` (1-based; None: all) are the stages whose scores and masks are used, as Go's
    ``cascade.Options.Stages`` (the paper's stage-wise test, Table 4): the other stages'
    ensemble weights become 0 and only the chosen stages' masks are averaged; boxes stay
    the last stage's and ``stage_scores`` keep every stage.

    Returns a dict:
      - ``boxes`` [K, 4] frame pixels, ``scores`` [K], ``labels`` [K] (0..C-1),
        ``masks`` uint8 [K, H, W]: as ``HTC.predict``
      - ``stage_scores`` [K, T]: each stage's softmax probability of the label, averaged over views
      - ``proposals`` [R, 5]: the shared proposals (frame pixels, score) every view scored
      - ``views``: the PreparedView of each view
      - ``view_outputs``: per view the graph inputs/outputs it produced: ``rois`` [R, 5],
        ``stage_logits`` [R, T, C+1], ``stage_boxes`` [R, T, 4] (view pixels), ``mask_rois`` [K, 5],
        ``mask_labels`` [K], ``stage_masks`` [K, T, S, S] (not un-flipped)
      - ``rows`` [K]: the proposal each detection came from
    Call ``model.eval()`` first.
    """
    if not views:
        raise ValueError("predict_aug: need at least one view")
    views = [v if isinstance(v, View) else View(tuple(v[0]), bool(v[1])) for v in views]
    frame = _as_hwc_uint8(image)
    h0, w0 = int(frame.shape[0]), int(frame.shape[1])
    device = next(model.parameters()).device
    cfg = model.cfg
    test = cfg.test
    feature_net = model.feature_net()
    box_cascade = model.box_cascade()
    mask_cascade = model.mask_cascade()

    preps: List[PreparedView] = []
    feats = []
    view_props = []
    for v in views:
        p = prepare_view(frame, v, mean=mean, std=std, size_divisor=size_divisor, resize=resize)
        f = feature_net.features(p.image[None].to(device))
        props = model.rpn_head.proposals(f.rpn_cls, f.rpn_reg, [(p.height, p.width)], training=False)[0]
        preps.append(p)
        feats.append(f)
        view_props.append(props)

    # 1. the shared proposals, in frame pixels
    if len(views) == 1:
        shared_view = view_props[0][:, :4]
        shared = torch.cat([preps[0].to_frame(shared_view), view_props[0][:, 4:]], dim=1)
    else:
        shared_view = None
        merged = torch.cat([torch.cat([p.to_frame(props[:, :4]), props[:, 4:]], dim=1)
                            for p, props in zip(preps, view_props)])
        keep = nms(merged[:, :4].contiguous(), merged[:, 4].contiguous(), cfg.rpn.nms_iou)
        shared = merged[keep[: cfg.rpn.test_max_proposals]]

    # 2-3. score the shared proposals in every view; average boxes and scores
    num_stages = cfg.roi.num_stages
    if stages is not None:
        chosen = sorted(set(int(s) for s in stages))
        if not chosen or len(chosen) != len(stages) or chosen[0] < 1 or chosen[-1] > num_stages:
            raise ValueError(f"predict_aug: stages {list(stages)}: want distinct stages in 1..{num_stages}")
        base = [1.0] * num_stages if stage_weights is None else [float(w) for w in stage_weights]
        if len(base) != num_stages:
            raise ValueError(f"ensemble: {len(base)} stage weights for {num_stages} stages")
        stage_weights = [base[t] if t + 1 in chosen else 0.0 for t in range(num_stages)]
        mask_stages = [t - 1 for t in chosen]
    else:
        mask_stages = list(range(num_stages))
    r = shared.shape[0]
    sum_scores = shared.new_zeros((r, cfg.num_classes + 1))
    sum_boxes = shared.new_zeros((r, 4))
    sum_stage_probs = shared.new_zeros((r, num_stages, cfg.num_classes + 1))
    view_outputs: List[Dict[str, Tensor]] = []
    for p, f in zip(preps, feats):
        boxes_v = shared_view if shared_view is not None else p.to_view(shared[:, :4])
        rois = boxes_to_rois([boxes_v]).to(device)
        sizes = torch.tensor([[p.height, p.width]], dtype=torch.float32, device=device)
        p2, p3, p4, p5 = f.fpn[:4]
        stage_logits, stage_boxes = box_cascade(p2, p3, p4, p5, f.semantic_feat, rois, sizes)
        sum_scores += ensemble_scores(stage_logits, ensemble, stage_weights).cpu()
        sum_stage_probs += F.softmax(stage_logits, dim=2).cpu()
        sum_boxes += p.to_frame(stage_boxes[:, -1].cpu())
        view_outputs.append({"rois": rois.cpu(), "stage_logits": stage_logits.cpu(), "stage_boxes": stage_boxes.cpu()})
    n = float(len(views))
    scores = sum_scores / n
    boxes = sum_boxes / n
    stage_probs = sum_stage_probs / n
    rows, labels, det_scores = multiclass_nms(boxes, scores, score_thr=test.score_thr, iou=test.nms_iou,
                                              max_num=test.max_per_img)
    det_boxes = boxes[rows]
    stage_scores = stage_probs[rows, :, :].gather(2, labels.view(-1, 1, 1).expand(-1, num_stages, 1))[:, :, 0]

    # 4. masks: every view x stage, un-flipped, averaged, pasted into the frame
    k = det_boxes.shape[0]
    mask_probs = det_boxes.new_zeros((k, 2 * cfg.roi.mask_roi_size, 2 * cfg.roi.mask_roi_size))
    for p, f, vo in zip(preps, feats, view_outputs):
        rois = boxes_to_rois([p.to_view(det_boxes)]).to(device)
        vo["mask_rois"], vo["mask_labels"] = rois.cpu(), labels.cpu()
        if k:
            p2, p3, p4, p5 = f.fpn[:4]
            probs = mask_cascade(p2, p3, p4, p5, f.semantic_feat, rois, labels.to(device)).cpu()  # [K, T, S, S]
            vo["stage_masks"] = probs
            if p.flip:
                probs = probs.flip(-1)
            mask_probs += probs[:, mask_stages].mean(dim=1)
        else:
            vo["stage_masks"] = mask_probs.new_zeros((0, num_stages) + tuple(mask_probs.shape[1:]))
    mask_probs /= n
    masks = paste_masks(mask_probs, det_boxes, h0, w0, test.mask_thr)
    return {
        "boxes": det_boxes,
        "scores": det_scores,
        "labels": labels,
        "masks": masks,
        "stage_scores": stage_scores,
        "proposals": shared,
        "rows": rows,
        "views": preps,
        "view_outputs": view_outputs,
    }
