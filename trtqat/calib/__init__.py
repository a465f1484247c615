"""Calibration maths shared by the torch path (``trtqat quantize``) and the onnxruntime path
(``trtqat optimize --calib``): histograms of absolute values and the amax search over them.

Why a package of its own: one implementation of each piece of maths. ``quant/`` (torch) and the
onnxruntime collector both need it, and neither may import the other's runtime; this package imports
numpy only (``ort_collect`` imports onnxruntime lazily).
"""
