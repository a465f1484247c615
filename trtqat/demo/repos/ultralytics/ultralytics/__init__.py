"""Scratch stand-in for the ``ultralytics`` package (trtqat test fixture, not Ultralytics code).

Only what a pickled YOLOv8 / YOLO11 / YOLO26 detection checkpoint references is here, written from
scratch: ``ultralytics.nn.tasks.DetectionModel`` and the layer classes of ``ultralytics.nn.modules``
(``conv``, ``block``, ``head``) with the upstream class, attribute and module names, so that a pickle made
with these classes has the same references and module tree (``model.22.cv3.0.2`` ...) as a real checkpoint
written by ``YOLO(...).save()``. trtqat copies this folder out (``trtqat.demo.fixtures.write_repo``) and
puts the copy on ``sys.path``; it is never importable as part of trtqat itself.
"""
__version__ = "8.4.190"  # the upstream release whose checkpoint layout the fixture reproduces
