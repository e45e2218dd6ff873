"""Models: light adaptation + timm segmentation network, the night-aware loss, and the RDN."""
from nightlab.models.segnet import SegModel, build_seg_model

__all__ = ["SegModel", "build_seg_model"]
