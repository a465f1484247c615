"""Scratch YOLOv5-shaped model package (trtqat fixture). Same import paths as upstream v7.0:
``models.common`` (Conv, Bottleneck, C3, SPPF, Concat) and ``models.yolo`` (Detect, DetectionModel)."""
