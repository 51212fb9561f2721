"""The GPU check (``lnbench gpu-check``): on one GPU machine, in about 5 minutes, the GPU tests,
then every available CUDA implementation over the anchor grid of docs/peers.md × float32 /
bfloat16 / float16, judged, timed and held to the bar; ``--sweep`` adds the launch-plan sweep.

Per point: the median of CUDA-event-timed calls with the L2 flushed before each, timed
interleaved with the case's other points (the one measurement of ``lnbench run``,
``lnbench.measure.timing``); GB/s and % of the card's measured copy bandwidth
(``lnbench.metrics``); every gradient judged by the judge's per-element bounds with the
reference in float64 on the GPU (``lnbench.judge``; ``--exact-ref`` uses the CPU's
extended-precision reference); dγ/dβ bit-identical over 3 calls; extra device memory per call.

Modules, in the order a check runs them:

- :mod:`~lnbench.gpu.preflight` — options, the GPU's presence, carried wheels, lnbench's
  dependencies, the probe (standard library only: ``scripts/gpu-check`` runs it before lnbench
  can import);
- :mod:`~lnbench.gpu.check` — the command: arguments to report and exit status;
- :mod:`~lnbench.gpu.selection` — which implementations, in which order, and the probe's child;
- :mod:`~lnbench.gpu.workers` — starting workers, accounting for the ones that die;
- :mod:`~lnbench.gpu.worker` — the worker process: every implementation on every case;
- :mod:`~lnbench.gpu.judging` — the reference and the judge's bounds on the device;
- :mod:`~lnbench.gpu.measure` — a point's preparation and a case's interleaved timing;
- :mod:`~lnbench.gpu.sweep` — the launch-plan sweep;
- :mod:`~lnbench.gpu.rows` — the rows of ``gpu-check.jsonl``;
- :mod:`~lnbench.gpu.bar` — the bar, judged from the points;
- :mod:`~lnbench.gpu.report`, :mod:`~lnbench.gpu.markdown` — ``gpu-check.json`` and ``.md``.
"""
