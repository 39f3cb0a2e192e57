"""Batch image resize: a few hundred photos made into thumbnails.

The tutorial's first job for a pool: each photo is decoded, shrunk and saved
on its own, so the work splits cleanly across cores. The photos are made
here (smooth colour fields with grain, saved as JPEG) so nothing is
downloaded. Needs Pillow (``pip install 'corepool[images]'``).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import tempfile
from pathlib import Path

from PIL import Image, ImageFilter

import corepool
from corepool._demo.common import DemoConfig, Row, check_agree, scaled, timed, warm_up

SCENARIO = "batch image resize"
PHOTOS = 250
PHOTO_SIZE = (1600, 1200)
THUMBNAIL_SIZE = (320, 240)


# -- the tasks --------------------------------------------------------------------


def make_thumbnail(path: Path) -> tuple[str, tuple[int, int], str]:
    """Shrink the photo at ``path``, sharpen it, save it beside; its name, size and digest."""
    with Image.open(path) as photo:
        thumbnail = photo.convert("RGB")
        thumbnail.thumbnail(THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
    thumbnail = thumbnail.filter(ImageFilter.UnsharpMask(radius=2, percent=120))
    target = path.with_name(f"{path.stem}.thumb.jpg")
    thumbnail.save(target, quality=85)
    return path.name, thumbnail.size, hashlib.sha256(target.read_bytes()).hexdigest()


def make_photo(path: Path, seed: int) -> None:
    """Save a photo-sized JPEG at ``path``: a smooth random colour field with grain."""
    rng = random.Random(seed)
    small = Image.new("RGB", (8, 6))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(48)])
    photo = small.resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", PHOTO_SIZE, rng.randbytes(PHOTO_SIZE[0] * PHOTO_SIZE[1]))
    Image.blend(photo, grain.convert("RGB"), 0.08).save(path, quality=90)


# -- serial, the standard library, corepool ---------------------------------------


def resize_serially(paths: list[Path]) -> list[tuple[str, tuple[int, int], str]]:
    """The loop a pool replaces."""
    return [make_thumbnail(path) for path in paths]


def run(config: DemoConfig) -> list[Row]:
    """Make the photos, then time the three ways of making their thumbnails."""
    count = scaled(PHOTOS, config.scale, least=config.workers * 2)
    with tempfile.TemporaryDirectory(prefix="corepool-demo-photos-") as folder:
        paths = [Path(folder, f"photo-{i:04}.jpg") for i in range(count)]
        with corepool.Pool(config.workers) as pool:  # making the photos is not timed
            pool.starmap(make_photo, [(path, i) for i, path in enumerate(paths)])

        serial_s, expected = timed(lambda: resize_serially(paths))
        with multiprocessing.Pool(config.workers) as mp_pool:
            stdlib_s, stdlib = timed(lambda: mp_pool.map(make_thumbnail, paths))
        with corepool.Pool(config.workers) as pool:
            warm_up(pool, __name__, config.workers, config.progress)
            ours_s, ours = timed(lambda: pool.map(make_thumbnail, paths, progress=config.progress))
    check_agree(SCENARIO, expected, {"multiprocessing.Pool": stdlib, "corepool.Pool": ours})
    title = f"{SCENARIO} ({count} photos {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]})"
    return [
        Row(title, "serial loop", serial_s, baseline=True),
        Row(title, "multiprocessing.Pool", stdlib_s),
        Row(title, "corepool.Pool", ours_s, versus="multiprocessing.Pool"),
    ]
