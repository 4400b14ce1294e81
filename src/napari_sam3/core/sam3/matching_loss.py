"""The detector's training loss: one-to-one matching of queries to objects, then class, box and
mask terms (transformers' ``Sam3Model`` returns no loss; this is ours, after DETR / SAM3).

Matching (`match_queries`): Hungarian assignment (scipy ``linear_sum_assignment``) on
``W_CLASS * focal class cost + W_L1 * L1(box) + W_GIOU * (-GIoU) + W_MASK * (BCE + dice)``.
Loss (`detection_loss`), for one image:
- classification: sigmoid focal loss on every query's logit, target 1 for matched queries and 0
  for the others; queries whose mask covers a rejected object (a hard negative) weigh
  `NEGATIVE_WEIGHT` times more; queries matched to an ignored object (held out, or beyond the
  query cap) are left out. The presence logit learns "the concept is in this image" (BCE).
- boxes: L1 on (cx, cy, w, h) and 1 - GIoU on the matched queries, in [0, 1] image coordinates;
- masks: BCE + dice on the matched queries at the mask head's resolution.
Each term is divided by the number of matched objects (at least 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

W_CLASS, W_L1, W_GIOU, W_MASK, W_DICE, W_PRESENCE = 2.0, 5.0, 2.0, 5.0, 5.0, 1.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
NEGATIVE_WEIGHT = 3.0
COST_SIDE = 64  # masks are compared at most at 64 x 64 for the matching cost
NEGATIVE_IOU = 0.5  # a query's mask this close to a rejected object counts as a hard negative


@dataclass
class Targets:
    """One image's objects at the mask head's resolution (torch tensors).

    masks (N, h, w) float in [0, 1]; boxes (N, 4) x0, y0, x1, y1 in [0, 1]; ``ignore`` (K, h, w)
    objects nobody may learn from (held-out labels): a query matched to one gets no loss;
    ``negatives`` (M, h, w) rejected objects: queries covering them are hard negatives.
    """

    masks: object
    boxes: object
    ignore: object = None
    negatives: object = None

    @property
    def n(self) -> int:
        return int(self.masks.shape[0])


def box_cxcywh(xyxy):
    import torch

    x0, y0, x1, y1 = xyxy.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def generalized_iou(a, b):
    """Pairwise GIoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh_c = (rb_c - lt_c).clamp(min=0)
    hull = (wh_c[..., 0] * wh_c[..., 1]).clamp(min=1e-7)
    return iou - (hull - union) / hull


def _pool(masks, side: int = COST_SIDE):
    """(N, h, w) -> at most (N, side, side), area averaged (for the matching cost only)."""
    import torch.nn.functional as F

    h, w = masks.shape[-2:]
    if h <= side and w <= side:
        return masks
    return F.adaptive_avg_pool2d(masks[None], (min(h, side), min(w, side)))[0]


def _mask_cost(pred_logits, target):
    """(Q, P) logits and (N, P) targets in [0, 1] -> (Q, N) mean BCE + dice cost."""
    import torch
    import torch.nn.functional as F

    p = pred_logits.float()
    pos = F.binary_cross_entropy_with_logits(p, torch.ones_like(p), reduction="none")
    neg = F.binary_cross_entropy_with_logits(p, torch.zeros_like(p), reduction="none")
    bce = (pos @ target.T + neg @ (1 - target).T) / p.shape[1]
    prob = p.sigmoid()
    dice = 1 - (2 * prob @ target.T + 1) / (prob.sum(1)[:, None] + target.sum(1)[None, :] + 1)
    return bce + dice


def match_queries(logits, boxes, masks, targets: Targets, extra=None):
    """Hungarian matching; returns (query indices, object indices) as numpy arrays.

    ``logits`` (Q,), ``boxes`` (Q, 4) xyxy, ``masks`` (Q, h, w) logits; ``extra`` (K, h, w) are
    more objects (ignored ones) matched after the targets, with object indices N.. N+K-1.
    """
    import torch
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        objs = targets.masks if extra is None else torch.cat([targets.masks, extra])
        n = int(objs.shape[0])
        if n == 0:
            return np.zeros(0, int), np.zeros(0, int)
        prob = logits.float().sigmoid()
        neg = (1 - FOCAL_ALPHA) * prob**FOCAL_GAMMA * -(1 - prob + 1e-8).log()
        pos = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * -(prob + 1e-8).log()
        cost_class = (pos - neg)[:, None].expand(-1, n)
        pm = _pool(masks.float()).flatten(1)
        tm = _pool(objs.float()).flatten(1)
        cost_mask = _mask_cost(pm, tm)
        obj_boxes = targets.boxes if extra is None else torch.cat([targets.boxes, _boxes(extra)])
        cost_l1 = torch.cdist(box_cxcywh(boxes.float()), box_cxcywh(obj_boxes.float()), p=1)
        cost_giou = -generalized_iou(boxes.float(), obj_boxes.float())
        cost = W_CLASS * cost_class + W_L1 * cost_l1 + W_GIOU * cost_giou + W_MASK * cost_mask
        q, o = linear_sum_assignment(cost.cpu().numpy())
    return q, o


def _boxes(masks):
    """(K, h, w) masks -> (K, 4) xyxy in [0, 1] (tight boxes of the pixels above 0.5)."""
    import torch

    k, h, w = masks.shape
    out = torch.zeros(k, 4, dtype=torch.float32, device=masks.device)
    for i in range(k):
        ys, xs = torch.nonzero(masks[i] > 0.5, as_tuple=True)
        if ys.numel():
            out[i] = torch.stack(
                [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]
            )
    return out


def sigmoid_focal(logits, targets, weights):
    import torch.nn.functional as F

    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    a_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (a_t * ce * (1 - p_t) ** FOCAL_GAMMA * weights).sum()


def detection_loss(out, targets: Targets, index: int = 0) -> tuple:
    """The loss of image ``index`` of a detector output; returns (total, {term: float})."""
    import torch
    import torch.nn.functional as F

    logits = out.pred_logits[index].float()
    boxes = out.pred_boxes[index].float()
    masks = out.pred_masks[index].float()
    q_n = logits.shape[0]
    if masks.shape[-2:] != targets.masks.shape[-2:]:
        raise ValueError("targets must be at the mask head's resolution")
    q, o = match_queries(logits, boxes, masks, targets, targets.ignore)
    is_target = o < targets.n
    qt, ot = q[is_target], o[is_target]
    cls_target = torch.zeros(q_n, device=logits.device)
    weights = torch.ones(q_n, device=logits.device)
    cls_target[qt] = 1.0
    weights[q[~is_target]] = 0.0  # matched to an ignored object: no lesson either way
    if targets.negatives is not None and targets.negatives.shape[0]:
        with torch.no_grad():
            pred = (masks > 0).float().flatten(1)
            neg = (targets.negatives > 0.5).float().flatten(1)
            inter = pred @ neg.T
            union = pred.sum(1)[:, None] + neg.sum(1)[None, :] - inter
            hard = ((inter / union.clamp(min=1)) >= NEGATIVE_IOU).any(1)
            hard[qt] = False
            weights[hard] = NEGATIVE_WEIGHT
    n_obj = max(1, len(qt))
    terms = {"class": W_CLASS * sigmoid_focal(logits, cls_target, weights) / n_obj}
    presence = getattr(out, "presence_logits", None)
    if presence is not None:
        p = presence[index].float().reshape(-1)
        want = torch.full_like(p, 1.0 if targets.n else 0.0)
        terms["presence"] = W_PRESENCE * F.binary_cross_entropy_with_logits(p, want)
    if len(qt):
        qt_t = torch.as_tensor(qt, device=logits.device)
        ot_t = torch.as_tensor(ot, device=logits.device)
        pb, tb = boxes[qt_t], targets.boxes[ot_t].float()
        terms["box_l1"] = W_L1 * F.l1_loss(box_cxcywh(pb), box_cxcywh(tb), reduction="sum") / n_obj
        giou = torch.diag(generalized_iou(pb, tb))
        terms["giou"] = W_GIOU * (1 - giou).sum() / n_obj
        pm, tm = masks[qt_t].flatten(1), targets.masks[ot_t].float().flatten(1)
        bce = F.binary_cross_entropy_with_logits(pm, tm, reduction="none").mean(1)
        prob = pm.sigmoid()
        dice = 1 - (2 * (prob * tm).sum(1) + 1) / (prob.sum(1) + tm.sum(1) + 1)
        terms["mask_bce"] = W_MASK * bce.sum() / n_obj
        terms["dice"] = W_DICE * dice.sum() / n_obj
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}
