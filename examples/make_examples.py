"""Rebuild the sample photos in this folder from scikit-image's public-domain sample images.

Run from the repository root: `python examples/make_examples.py` (needs scikit-image,
a dev dependency).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

MAX_SIDE = 400
SAMPLES = {  # file name -> scikit-image loader
    "astronaut.jpg": data.astronaut,
    "cat.jpg": data.chelsea,
    "coffee.jpg": data.coffee,
    "rocket.jpg": data.rocket,
    "camera.jpg": data.camera,
}


def main() -> None:
    here = Path(__file__).parent
    for name, load in SAMPLES.items():
        image = Image.fromarray(np.asarray(load())).convert("RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        image.save(here / name, quality=88, optimize=True)
        print(f"{name}: {image.width}x{image.height}, {(here / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
