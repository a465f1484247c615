"""Layer classes of the scratch ``ultralytics`` fixture (same names and import paths as upstream)."""
from .block import C2PSA, DFL, SPPF, Attention, Bottleneck, C2f, C3k, C3k2, PSABlock
from .conv import Concat, Conv, DWConv, autopad
from .head import Detect

__all__ = ("Attention", "Bottleneck", "C2PSA", "C2f", "C3k", "C3k2", "Concat", "Conv", "DFL", "DWConv", "Detect",
           "PSABlock", "SPPF", "autopad")
