"""Accuracy study: structured pruning at initialization trained on small offline data sets.

``python benchmarks/accuracy/run.py`` (see ``run.py``); ``data``, ``models`` and ``train``
hold the data sets, the four CNN families and the fixed training recipe; ``equal_latency``
compares the structured methods at equal measured onnxruntime latency.
"""
