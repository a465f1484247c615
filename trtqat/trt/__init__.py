"""trtexec driver and engine reports (TensorRT 8.6, 10 and 11). Never imports ``tensorrt``.

Modules, each one concept:

- :mod:`.versions`  capability table per TensorRT version, chosen from trtexec's banner/help;
- :mod:`.shapes`    ONNX input name/shape and the min/opt/max batch profile;
- :mod:`.trtexec`   frozen ``BuildSpec``/``BenchSpec``, pure ``build_command``/``bench_command``, ``run``;
- :mod:`.engine`    build/bench end to end with the side files (``.build.json``, ``.bench.json``);
- :mod:`.log`       console-log and performance-summary parser;
- :mod:`.normalize` per-version quirks of the ``--exportLayerInfo``/``--exportProfile`` JSON;
- :mod:`.plan`      ``EnginePlan``/``Layer`` records and ``engine_layers_summary``;
- :mod:`.report`, :mod:`.compare`, :mod:`.draw` views over plans.

Import the submodules directly (``from trtqat.trt.plan import EnginePlan``); this package imports nothing
so that ``import trtqat.trt`` stays free of onnx and matplotlib.
"""
