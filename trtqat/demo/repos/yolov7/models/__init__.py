"""Scratch YOLOv7-shaped model package (trtqat fixture). Same import paths as upstream yolov7:
``models.common`` (Conv, Concat, MP, SPPCSPC, RepConv, ImplicitA, ImplicitM) and ``models.yolo``
(IDetect, Model)."""
