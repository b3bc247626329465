"""Decoding limits, in a module of their own so that ``runtime/__init__`` can read them before cv2 is imported."""

# Refuse images past this many pixels before they fill memory (decompression bombs). 100 MP covers real cameras.
DEFAULT_MAX_PIXELS = 100_000_000

# A decoder process's address space past its start-up, for an image of ``max_pixels``: the codec's own buffers
# and the decoded BGR image (up to 16-bit RGBA, 8 bytes a pixel, while it is converted), plus a floor for the
# codecs' fixed tables. Measured peaks are in docs/decoding.md; an allocation past the budget fails at once.
DECODE_BYTES_PER_PIXEL = 16
DECODE_MEMORY_FLOOR = 256 << 20


def decode_memory_budget(max_pixels: int) -> int:
    return DECODE_MEMORY_FLOOR + DECODE_BYTES_PER_PIXEL * int(max_pixels)
