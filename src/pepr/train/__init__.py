"""Training: one cell's training, evaluation and measurement (``pepr train``).

The package itself is light; torch, timm and CodeCarbon load inside the functions that use them.
"""
