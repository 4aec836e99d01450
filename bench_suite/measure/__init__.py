"""Running cases: the harness, the runner, rounds in worker processes, ``ab``, peaks, the
doctor's probe, launches over many devices, and the GPU timing options (``measure.gpu``)."""
