"""Planning: config -> validated grid of cells -> the workflow's jobs and what retrains them.

Nothing here imports torch or the report at module level.
"""
