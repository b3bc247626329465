"""Decoding limits, in a module of their own so that ``runtime/__init__`` can read them before cv2 is imported."""

# Refuse images past this many pixels before they fill memory (decompression bombs). 100 MP covers real cameras.
DEFAULT_MAX_PIXELS = 100_000_000
