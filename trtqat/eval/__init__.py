"""Evaluation of float / PTQ / QAT models: letterboxed inference, NMS, COCO mAP and label-free fidelity.

Layering: ``eval`` sits above ``quant`` (it switches quantizers on and off through
:mod:`trtqat.quant.modes`) and below ``cli``. Nothing here is imported by ``trtqat`` at start-up; torch,
pycocotools and torchvision are reached only when a function that needs them runs.

Modules:
  * :mod:`.boxes`     box formats and letterbox un-mapping
  * :mod:`.nms`       torchvision NMS when importable, else an exact vectorised fallback
  * :mod:`.layouts`   detector output layouts (yolov5, ultralytics, end2end): which, checked, to detections
  * :mod:`.labels`    YOLO txt labels (``images/`` -> ``labels/``) and COCO JSON ground truth
  * :mod:`.coco_map`  mAP@0.5:0.95 and mAP@0.5 with pycocotools
  * :mod:`.bootstrap` intervals of mAP and of paired mAP differences, resampling images
  * :mod:`.fidelity`  cosine / SQNR per output and agreement mAP against the float model
  * :mod:`.evaluate`  one entry point: run a model (or any runner) over a folder and return metrics
  * :mod:`.runners`   checkpoints, ONNX (onnxruntime) and TensorRT engines behind one interface
  * :mod:`.raw_head`  decoding of raw per-level head outputs (anchors from the ONNX metadata)
  * :mod:`.job`       ``trtqat eval``: several models, one size, one metric, one table
"""
