"""trtqat: INT8 YOLO models on TensorRT as fast as TensorRT's own best INT8 build, at FP16 accuracy.

Layers (each readable alone; imports only point downward):

- ``trtqat.graph``  pure ONNX analysis (onnx-graphsurgeon, numpy): scale-sharing groups, TensorRT lint.
- ``trtqat.quant``  torch-side quantization with pytorch-quantization: replacement, calibration, QAT.
- ``trtqat.models`` loading upstream YOLOv5/YOLOv7 checkpoints, family detection and fusing.
- ``trtqat.trt``    trtexec driver, engine-report parsing, comparison and drawing (never imports tensorrt).
- ``trtqat.cli``    thin click commands.

Importing ``trtqat`` imports neither torch nor TensorRT.
"""
from .errors import BuildError, InputError, TrtqatError, UsageError, VerificationError

__version__ = "0.1.0"
__all__ = ["TrtqatError", "UsageError", "InputError", "BuildError", "VerificationError", "__version__"]
