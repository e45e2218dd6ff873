"""RDN: an anchor-based region proposal network (torchvision's RPN parts) on a timm backbone of its own,
or (``rdn.backbone: shared``) on the image model's frozen backbone.

The paper used maskrcnn-benchmark's RPN; torchvision's ``AnchorGenerator``, ``RPNHead`` and
``RegionProposalNetwork`` are the same design. Trained with objectness (L_cls^R) and box
regression (L_reg^R) on context boxes of hard classes. Works at ``image_scale``; boxes in and
out are in the scaled image's pixels (see :func:`nightlab.boxes.scale_boxes`).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops import boxes as box_ops

from nightlab.errors import ConfigError
from nightlab.models.segnet import SegModel, create_backbone, input_normalisation


class RPNBackbone(nn.Module):
    """timm features at strides 8 and 16 (with an FPN) or stride 8 alone, as an OrderedDict."""

    def __init__(self, name: str, fpn: bool, channels: int = 128, pretrained: str | None = None,
                 option: str = "rdn.pretrained"):
        super().__init__()
        reductions = timm.create_model(name, pretrained=False, features_only=True).feature_info.reduction()
        # timm builds only the blocks up to the last requested level: no compute past stride 16.
        picked = _levels(reductions, fpn, name)
        body = create_backbone(name, pretrained, option, out_indices=picked)
        self._neck(body, list(range(len(picked))), fpn, channels)
        mean, std = input_normalisation(body)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _neck(self, body: nn.Module, indices: list[int], fpn: bool, channels: int) -> None:
        self.body, self.indices = body, indices
        in_ch = [body.feature_info.channels()[i] for i in indices]
        self.fpn = FeaturePyramidNetwork(in_ch, channels) if fpn else None
        self.proj = None if fpn else nn.Conv2d(in_ch[0], channels, 1)
        self.out_channels = channels

    @property
    def levels(self) -> int:
        return len(self.indices)

    @property
    def strides(self) -> list[int]:
        """The stride of each output level (8, or 8 and 16)."""
        reductions = self.body.feature_info.reduction()
        return [reductions[i] for i in self.indices]

    def neck(self, feats: list[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        """The RPN's levels from the body's feature list."""
        picked = OrderedDict((str(k), feats[i]) for k, i in enumerate(self.indices))
        if self.fpn is not None:
            return self.fpn(picked)
        return OrderedDict(p0=self.proj(picked["0"]))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.neck(self.body((x - self.mean) / self.std))


class SharedBackbone(RPNBackbone):
    """``rdn.backbone: shared``: the image model's light adaptation and backbone, frozen, under the RDN's
    own neck. Two-level inference then runs the backbone once for both
    (nightlab.inference.image_probs_and_proposals);
    the RDN keeps a copy of those weights, so it also runs on its own (training, HDM, recall, export).

    Frozen, not trained jointly: the hard classes, and so the RDN's targets, are chosen from the trained
    image model's IoU (docs/design.md 1.2), and training the backbone further would change the image
    model those choices were made on.
    """

    def __init__(self, image_model: SegModel, fpn: bool, channels: int = 128):
        nn.Module.__init__(self)
        reductions = image_model.backbone.feature_info.reduction()
        self._neck(image_model.backbone, _levels(reductions, fpn, "the image model's backbone"), fpn, channels)
        self.light = image_model.light
        self.register_buffer("mean", image_model.mean.clone(), persistent=False)
        self.register_buffer("std", image_model.std.clone(), persistent=False)
        for frozen in self.frozen():
            frozen.requires_grad_(False)

    def frozen(self) -> list[nn.Module]:
        return [m for m in (self.body, self.light) if m is not None]

    def train(self, mode: bool = True) -> SharedBackbone:
        super().train(mode)
        for frozen in self.frozen():  # batch-norm statistics stay the image model's
            frozen.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self.light is not None:
            x, _ = self.light(x)
        return self.neck(self.body((x - self.mean) / self.std))


def shares_backbone(rdn: RDN, image_model: nn.Module) -> bool:
    """Whether ``rdn`` runs on ``image_model``'s own backbone: a shared-backbone RDN holding the same
    weights (an RDN trained on another image model keeps that model's weights, and runs on its own)."""
    if not (isinstance(rdn.backbone, SharedBackbone) and isinstance(image_model, SegModel)):
        return False
    mine = {**image_model.backbone.state_dict(prefix="body."),
            **({} if image_model.light is None else image_model.light.state_dict(prefix="light."))}
    theirs = {k: v for k, v in rdn.backbone.state_dict().items() if k.startswith(("body.", "light."))}
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k].to(mine[k].device)) for k in mine)


def _levels(reductions: list[int], fpn: bool, what: str) -> list[int]:
    """Indices of the stride-8 (and, with the FPN, stride-16) features among a backbone's levels."""
    picked = [reductions.index(r) for r in ([8, 16] if fpn else [8]) if r in reductions]
    if not picked:
        raise ConfigError(f"rdn.backbone: {what} has no stride-8 features (its strides: {reductions}); the RPN "
                          "needs them: use a convolutional timm model such as resnet18")
    return picked


def auto_anchor_sizes(box_sides: np.ndarray, n: int = 4) -> tuple[int, ...]:
    """Anchor sizes spread over the 10th-95th percentile of the (scaled) box sides, rounded, unique."""
    if len(box_sides) == 0:
        return (16, 32, 64, 128)[:n]
    lo, hi = np.percentile(box_sides, [10, 95])
    sizes = np.unique(np.round(np.geomspace(max(lo, 4.0), max(hi, lo + 1, 8.0), n)).astype(int))
    return tuple(int(s) for s in sizes)


@dataclass(frozen=True)
class RpnSettings:
    """The RPN's shape and its proposal and matching rules (the rdn section's keys of the same names)."""
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    fpn: bool = False
    pre_nms_top_n: int = 600
    post_nms_top_n: int = 100
    nms_thresh: float = 0.7
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.3

    @classmethod
    def of(cls, cfg) -> RpnSettings:
        """From an RdnConfig, or the dict saved with an RDN (rdn_config)."""
        get = cfg.__getitem__ if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
        return cls(**{f.name: get(f.name) for f in fields(cls)})


class RDN(nn.Module):
    """``backbone``: a timm model name (the RDN's own backbone) or a built :class:`RPNBackbone`, such
    as a :class:`SharedBackbone`; ``pretrained``: the own backbone's weights, from the params key
    ``option`` (named in errors)."""

    def __init__(self, backbone: str | RPNBackbone, anchor_sizes, rpn: RpnSettings = RpnSettings(),
                 pretrained: str | None = None, option: str = "rdn.pretrained"):
        super().__init__()
        aspect_ratios, fpn = rpn.aspect_ratios, rpn.fpn
        self.backbone = backbone if isinstance(backbone, RPNBackbone) else RPNBackbone(
            backbone, fpn, pretrained=pretrained, option=option)
        levels = self.backbone.levels
        sizes = tuple(int(s) for s in anchor_sizes)
        if levels == 1:
            anchor_gen = AnchorGenerator((sizes,), (tuple(aspect_ratios),))
        else:  # split the sizes between the levels: small anchors on the fine level
            # RPNHead shares one conv across levels, so both need the same anchors per location:
            # with an odd count the middle size goes to both levels.
            half = (len(sizes) + 1) // 2
            anchor_gen = AnchorGenerator((sizes[:half], sizes[len(sizes) - half:]), (tuple(aspect_ratios),) * 2)
        head = RPNHead(self.backbone.out_channels, anchor_gen.num_anchors_per_location()[0])
        self.rpn = RegionProposalNetwork(
            anchor_gen, head, rpn.fg_iou_thresh, rpn.bg_iou_thresh, batch_size_per_image=256, positive_fraction=0.5,
            pre_nms_top_n=dict(training=rpn.pre_nms_top_n, testing=rpn.pre_nms_top_n),
            post_nms_top_n=dict(training=rpn.post_nms_top_n, testing=rpn.post_nms_top_n), nms_thresh=rpn.nms_thresh)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None, with_anchors: bool = False):
        """images (N, 3, H, W) in [0, 1]; targets [{'boxes': (K, 4)}] for training (see :meth:`proposals`).

        Returns (boxes, scores, losses): per image, proposals sorted by objectness probability; with
        ``with_anchors`` also the index of the anchor each proposal was decoded from (boxes, scores, anchors,
        losses).
        """
        objectness, deltas = self.network(images)
        return self.proposals(images, objectness, deltas, targets, with_anchors)

    def network(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone and RPN head, the part exported to ONNX (nightlab.export): per level (strides
        ``backbone.strides``), objectness logits (N, A, h, w) and box deltas (N, 4A, h, w), A anchors
        per location."""
        return self.rpn.head(list(self.backbone(images).values()))

    def proposals(self, images: torch.Tensor, objectness: list[torch.Tensor], deltas: list[torch.Tensor],
                  targets: list[dict] | None = None, with_anchors: bool = False):
        """Anchors, box decoding, top-n, clipping and NMS (torchvision) on :meth:`network`'s outputs, and
        the losses with ``targets``: the rest of :meth:`forward`. Only the shape of ``images`` is read.

        ``targets[i]`` holds the ground-truth ``boxes`` (objectness labels of the anchors by their IoU
        with them, and box regression toward them) and, for HDM's relabelled training (supplement eq. 2),
        ``anchors`` (K,) and ``labels`` (K,) in [0, 1]: those anchors' objectness targets instead, the
        anchors of the proposals HDM scored; box regression stays on the ground truth."""
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        # The generator reads each level's grid size from the maps it is given: the head keeps the features' size.
        anchors = self.rpn.anchor_generator(image_list, objectness)
        num_images = len(anchors)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.rpn.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, scores, picked = filter_with_anchors(self.rpn, proposals, objectness, image_list.image_sizes,
                                                    per_level)
        losses = {}
        if targets is not None:
            labels, matched = self.rpn.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.rpn.box_coder.encode(matched, anchors)
            if any("anchors" in t for t in targets):
                loss_obj, loss_reg = relabelled_loss(self.rpn, objectness, deltas, labels, regression_targets,
                                                     targets)
            else:
                loss_obj, loss_reg = self.rpn.compute_loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg}
        return (boxes, scores, picked, losses) if with_anchors else (boxes, scores, losses)


def filter_with_anchors(rpn: RegionProposalNetwork, proposals, objectness, image_shapes, num_anchors_per_level):
    """torchvision's ``RegionProposalNetwork.filter_proposals`` (top-n per level, clipping, small boxes,
    score threshold, per-level NMS, post-NMS top-n), the same boxes and scores, and also the index of
    the anchor each kept proposal was decoded from: HDM labels those anchors (eq. 2). torchvision does
    not return them, so its selection is written out here, step for step."""
    num_images = proposals.shape[0]
    device = proposals.device
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device)
                        for i, n in enumerate(num_anchors_per_level)]).reshape(1, -1).expand_as(objectness)
    top_n_idx = rpn._get_top_n_idx(objectness, num_anchors_per_level)
    batch_idx = torch.arange(num_images, device=device)[:, None]
    objectness, levels = objectness[batch_idx, top_n_idx], levels[batch_idx, top_n_idx]
    proposals = proposals[batch_idx, top_n_idx]
    final_boxes, final_scores, final_anchors = [], [], []
    for boxes, scores, lvl, idx, shape in zip(proposals, torch.sigmoid(objectness), levels, top_n_idx, image_shapes):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)
        keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, lvl, idx = boxes[keep], scores[keep], lvl[keep], idx[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, lvl, idx = boxes[keep], scores[keep], lvl[keep], idx[keep]
        keep = box_ops.batched_nms(boxes, scores, lvl, rpn.nms_thresh)[: rpn.post_nms_top_n()]
        final_boxes.append(boxes[keep])
        final_scores.append(scores[keep])
        final_anchors.append(idx[keep])
    return final_boxes, final_scores, final_anchors


def relabelled_loss(rpn: RegionProposalNetwork, objectness, deltas, labels, regression_targets, targets):
    """The RPN's losses with HDM's relabelled anchors (supplement eq. 2): objectness toward ``labels`` where
    the target gives none for an anchor (its IoU with the ground truth, as torchvision labels it) and
    toward the target's ``labels`` (hard 0/1, or a soft gain in [0, 1]) at its ``anchors``; anchors are
    sampled as torchvision does (half positives at most, a label >= 0.5 counting as positive), and box
    regression is on the sampled anchors that are positive for the ground truth."""
    relabelled = []
    for lab, t in zip(labels, targets):
        lab = lab.clone()
        if "anchors" in t and len(t["anchors"]):
            lab[t["anchors"]] = t["labels"].to(lab)
        relabelled.append(lab)
    hard = [torch.where(lab < 0, lab, (lab >= 0.5).to(lab)) for lab in relabelled]
    pos, neg = rpn.fg_bg_sampler(hard)
    pos = torch.where(torch.cat(pos, dim=0))[0]
    neg = torch.where(torch.cat(neg, dim=0))[0]
    sampled = torch.cat([pos, neg], dim=0)
    on_gt = pos[torch.cat(labels, dim=0)[pos] >= 1]  # box regression toward the ground truth only
    box_loss = F.smooth_l1_loss(deltas[on_gt], torch.cat(regression_targets, dim=0)[on_gt], beta=1 / 9,
                                reduction="sum") / max(sampled.numel(), 1)
    obj_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], torch.cat(relabelled)[sampled])
    return obj_loss, box_loss


SHARED = "shared"  # the rdn.backbone value that puts the RPN on the image model's frozen backbone


def build_rdn(cfg, anchor_sizes, image_model: SegModel | None = None) -> RDN:
    """From an RdnConfig; ``image_model`` (trained) is needed, and only used, with ``backbone: shared``."""
    backbone = cfg.backbone
    if cfg.backbone == SHARED:
        if not isinstance(image_model, SegModel):
            raise ValueError("rdn.backbone: shared needs the image model built by this pipeline (a SegModel), "
                             f"not {type(image_model).__name__}")
        backbone = SharedBackbone(image_model, cfg.fpn)
    option = f"{getattr(cfg, 'SECTION', 'rdn')}.pretrained"
    return RDN(backbone, anchor_sizes, RpnSettings.of(cfg), cfg.pretrained, option)


def rdn_config(cfg, anchor_sizes, image_config: dict | None = None) -> dict:
    """What :func:`rdn_from_config` rebuilds the network from; with ``backbone: shared`` the image model's
    saved config (``image_config``) too."""
    c = {"arch": "rdn", "backbone": cfg.backbone, "fpn": cfg.fpn, "anchor_sizes": list(anchor_sizes),
         "aspect_ratios": list(cfg.aspect_ratios), "pre_nms_top_n": cfg.pre_nms_top_n,
         "post_nms_top_n": cfg.post_nms_top_n, "nms_thresh": cfg.nms_thresh,
         "fg_iou_thresh": cfg.fg_iou_thresh, "bg_iou_thresh": cfg.bg_iou_thresh, "image_scale": cfg.image_scale}
    if cfg.backbone == SHARED:
        c["image_model"] = dict(image_config)
    return c


def rdn_from_config(c: dict) -> RDN:
    backbone = c["backbone"]
    if backbone == SHARED:
        from nightlab.models.store import seg_from_config

        backbone = SharedBackbone(seg_from_config(c["image_model"]), c["fpn"])
    return RDN(backbone, c["anchor_sizes"], RpnSettings.of(c))


def load_rdn(model_dir, device="cpu") -> tuple[RDN, dict]:
    """An RDN (or its HDM fine-tune) saved by ``store.save_model`` with :func:`rdn_config`."""
    from nightlab.models.store import load_state, load_weights

    state, cfg = load_state(model_dir)
    model = load_weights(rdn_from_config(cfg), state, model_dir)
    return model.to(device).eval(), cfg


def rpn_loss(model: RDN, x: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """L_cls^R + L_reg^R: the ``loss_fn(model, x, y)`` the training loop calls for the RDN."""
    return sum(model(x, targets)[2].values())
