"""The defaults of a verdict, shared by ``compare``, ``noise`` and the CLI (no heavy imports).

Benjamini-Hochberg at 5%: on an A/A comparison (nothing changed) it bounds the chance that
anything is called changed at 5%, as Holm does; when a change touches many cases at once (a
slower library) it finds about twice as many of them. Chosen on measured A/A and power trials
(docs/compare.md): Holm at 1% found a 10% slowdown in a third of the cases it touched.
"""

CORRECTIONS = ("bh", "holm", "none")
DEFAULT_CORRECTION = "bh"
DEFAULT_ALPHA = 0.05
DEFAULT_THRESHOLD = 0.05  # relative change that matters: 5% slower or faster
