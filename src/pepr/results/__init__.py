"""Results: the run contract (layout, atomic writes), aggregation, PePR scoring, table I/O and sweep status.

Light on purpose: nothing here imports torch.
"""
