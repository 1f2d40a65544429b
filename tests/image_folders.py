"""Class folders of real image files for the folder source's tests (idn_tf.data.folder)."""

import io
import os

import numpy as np
from PIL import Image

# Colours the classes are told apart by (a small CNN learns them in a few epochs).
PALETTE = ((200, 40, 40), (40, 180, 60), (50, 70, 210), (220, 200, 40))
SIZES = ((40, 52), (64, 48), (36, 36), (90, 60))  # (H, W), used in turn


def image_bytes(rng, colour, size, mode, fmt):
    """An image file's bytes: `colour` plus a ramp and pixel noise, in PIL `mode`/`fmt`."""
    height, width = size
    ramp = np.add.outer(np.arange(height), np.arange(width))[..., np.newaxis]
    pixels = np.asarray(colour) + 40 * ramp / (height + width) + rng.integers(0, 24, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def make_image_folder(root, classes=("cat", "dog", "fox"), per_class=12, seed=0,
                      corrupt=None, hidden=True, split=False, nested=False):
    """Writes root/<class>/<image> (or root/train/... and root/test/... with `split`).

    Images cycle through `SIZES`, formats PNG/JPEG and modes RGB/L (grayscale); one
    image per class sits in a subfolder with `nested`; `corrupt` = (class, number) names
    an image written truncated; `hidden` adds a hidden file and a hidden folder (ignored).
    Returns {relative path: class name} of the images written.
    """
    rng = np.random.default_rng(seed)
    written = {}
    parts = [("train", per_class), ("test", max(2, per_class // 3))] if split else [("", per_class)]
    for part, count in parts:
        for c, name in enumerate(classes):
            folder = os.path.join(root, part, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                fmt = ("PNG", "JPEG")[i % 2]
                mode = ("RGB", "RGB", "L")[i % 3]
                sub = "more/" if nested and i == count - 1 else ""
                relative = os.path.join(part, name, f"{sub}img{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}")
                data = image_bytes(rng, PALETTE[c % len(PALETTE)], SIZES[i % len(SIZES)], mode, fmt)
                if corrupt == (name, i):
                    data = data[:len(data) // 2]
                path = os.path.join(root, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as file:
                    file.write(data)
                written[relative.replace(os.sep, "/")] = name
            if hidden:
                with open(os.path.join(folder, ".DS_Store"), "wb") as file:
                    file.write(b"\x00\x01junk")
                os.makedirs(os.path.join(folder, ".thumbs"), exist_ok=True)
                with open(os.path.join(folder, ".thumbs", "x.jpg"), "wb") as file:
                    file.write(b"not an image")
    return written
