"""trtqat benchmarks (``make bench``): speed against the reference flow, placement quality, export.

Every figure is a ratio measured side by side in one run (interleaved repeats, medians) or a count;
absolute times are stored together with the machine they were measured on. See ``benchmarks/README.md``.
"""
