"""The swapper, shipped as a file into a swap group's server (``swapper.py``: the standard library only)."""
