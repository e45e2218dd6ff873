"""RDN: an anchor-based region proposal network (torchvision's RPN parts) on a timm backbone.

The paper used maskrcnn-benchmark's RPN; torchvision's ``AnchorGenerator``, ``RPNHead`` and
``RegionProposalNetwork`` are the same design. Trained with objectness (L_cls^R) and box
regression (L_reg^R) on context boxes of hard classes. Works at ``image_scale``; boxes in and
out are in the scaled image's pixels (see :func:`nightlab.boxes.scale_boxes`).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import timm
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import FeaturePyramidNetwork

from nightlab.models.segnet import create_backbone, input_normalisation


class RPNBackbone(nn.Module):
    """timm features at strides 8 and 16 (with an FPN) or stride 8 alone, as an OrderedDict."""

    def __init__(self, name: str, fpn: bool, channels: int = 128, pretrained: str | None = None,
                 option: str = "rdn.pretrained"):
        super().__init__()
        reductions = timm.create_model(name, pretrained=False, features_only=True).feature_info.reduction()
        want = [8, 16] if fpn else [8]
        picked = [reductions.index(r) for r in want if r in reductions]
        if not picked:
            raise ValueError(f"backbone {name} has no stride-8 features (strides {reductions})")
        # timm builds only the blocks up to the last requested level: no compute past stride 16.
        body = create_backbone(name, pretrained, option, out_indices=picked)
        self.indices = list(range(len(picked)))
        self.body = body
        in_ch = [body.feature_info.channels()[i] for i in self.indices]
        self.fpn = FeaturePyramidNetwork(in_ch, channels) if fpn else None
        self.proj = None if fpn else nn.Conv2d(in_ch[0], channels, 1)
        self.out_channels = channels
        mean, std = input_normalisation(body)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def levels(self) -> int:
        return len(self.indices)

    @property
    def strides(self) -> list[int]:
        """The stride of each output level (8, or 8 and 16)."""
        return list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body((x - self.mean) / self.std)
        feats = OrderedDict((str(k), feats[i]) for k, i in enumerate(self.indices))
        if self.fpn is not None:
            return self.fpn(feats)
        return OrderedDict(p0=self.proj(feats["0"]))


def auto_anchor_sizes(box_sides: np.ndarray, n: int = 4) -> tuple[int, ...]:
    """Anchor sizes spread over the 10th-95th percentile of the (scaled) box sides, rounded, unique."""
    if len(box_sides) == 0:
        return (16, 32, 64, 128)[:n]
    lo, hi = np.percentile(box_sides, [10, 95])
    sizes = np.unique(np.round(np.geomspace(max(lo, 4.0), max(hi, lo + 1, 8.0), n)).astype(int))
    return tuple(int(s) for s in sizes)


class RDN(nn.Module):
    def __init__(self, backbone: str, anchor_sizes, aspect_ratios=(0.5, 1.0, 2.0), fpn: bool = False,
                 pre_nms_top_n: int = 600, post_nms_top_n: int = 100, nms_thresh: float = 0.7,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.3, pretrained: str | None = None,
                 option: str = "rdn.pretrained"):
        super().__init__()
        self.backbone = RPNBackbone(backbone, fpn, pretrained=pretrained, option=option)
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
            anchor_gen, head, fg_iou_thresh, bg_iou_thresh, batch_size_per_image=256, positive_fraction=0.5,
            pre_nms_top_n=dict(training=pre_nms_top_n, testing=pre_nms_top_n),
            post_nms_top_n=dict(training=post_nms_top_n, testing=post_nms_top_n), nms_thresh=nms_thresh)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        """images (N, 3, H, W) in [0, 1]; targets [{'boxes': (K, 4)}] for training.

        Returns (boxes, scores, losses): per image, proposals sorted by objectness probability.
        """
        objectness, deltas = self.network(images)
        return self.proposals(images, objectness, deltas, targets)

    def network(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone and RPN head, the part exported to ONNX (nightlab.export): per level (strides
        ``backbone.strides``), objectness logits (N, A, h, w) and box deltas (N, 4A, h, w), A anchors
        per location."""
        return self.rpn.head(list(self.backbone(images).values()))

    def proposals(self, images: torch.Tensor, objectness: list[torch.Tensor], deltas: list[torch.Tensor],
                  targets: list[dict] | None = None):
        """Anchors, box decoding, top-n, clipping and NMS (torchvision) on :meth:`network`'s outputs, and
        the losses with ``targets``: the rest of :meth:`forward`. Only the shape of ``images`` is read."""
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        # The generator reads each level's grid size from the maps it is given: the head keeps the features' size.
        anchors = self.rpn.anchor_generator(image_list, objectness)
        num_images = len(anchors)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.rpn.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, scores = self.rpn.filter_proposals(proposals, objectness, image_list.image_sizes, per_level)
        losses = {}
        if targets is not None:
            labels, matched = self.rpn.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.rpn.box_coder.encode(matched, anchors)
            loss_obj, loss_reg = self.rpn.compute_loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg}
        return boxes, scores, losses


def build_rdn(cfg, anchor_sizes) -> RDN:
    return RDN(cfg.backbone, anchor_sizes, cfg.aspect_ratios, cfg.fpn, cfg.pre_nms_top_n, cfg.post_nms_top_n,
               cfg.nms_thresh, cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.pretrained,
               f"{getattr(cfg, 'SECTION', 'rdn')}.pretrained")


def rdn_config(cfg, anchor_sizes) -> dict:
    return {"arch": "rdn", "backbone": cfg.backbone, "fpn": cfg.fpn, "anchor_sizes": list(anchor_sizes),
            "aspect_ratios": list(cfg.aspect_ratios), "pre_nms_top_n": cfg.pre_nms_top_n,
            "post_nms_top_n": cfg.post_nms_top_n, "nms_thresh": cfg.nms_thresh,
            "fg_iou_thresh": cfg.fg_iou_thresh, "bg_iou_thresh": cfg.bg_iou_thresh, "image_scale": cfg.image_scale}


def rdn_from_config(c: dict) -> RDN:
    return RDN(c["backbone"], c["anchor_sizes"], c["aspect_ratios"], c["fpn"], c["pre_nms_top_n"],
               c["post_nms_top_n"], c["nms_thresh"], c["fg_iou_thresh"], c["bg_iou_thresh"])


def load_rdn(model_dir, device="cpu") -> tuple[RDN, dict]:
    """An RDN (or its HDM fine-tune) saved by ``store.save_model`` with :func:`rdn_config`."""
    from nightlab.models.store import load_state

    state, cfg = load_state(model_dir)
    model = rdn_from_config(cfg)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg


def rpn_loss(model: RDN, x: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """L_cls^R + L_reg^R: the ``loss_fn(model, x, y)`` the training loop calls for the RDN."""
    return sum(model(x, targets)[2].values())
