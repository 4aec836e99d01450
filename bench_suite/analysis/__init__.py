"""Computing with saved measurements: comparisons, the roofline, the datasheet catalogue,
noise figures and the doctor's verdicts. Nothing here times anything or renders anything."""
