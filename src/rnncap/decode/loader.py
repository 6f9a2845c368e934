"""The file loop of a torch `Captioner` off the GPU pipeline: DataLoader processes open and
preprocess the images with PIL, the calling process encodes them and runs the beam search.

One of the three ways `Captioner.caption_files` goes through files, beside
`rnncap.decode.pipeline.caption_stream` (CUDA, stages overlapped) and
`rnncap.decode.runtime.caption_file_batches` (no torch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from torch.utils.data import DataLoader

from rnncap.data.images import ImageFiles, collate_images
from rnncap.decode.beam import DecodeOptions


def loader_groups(
    captioner,
    paths: Sequence[str | os.PathLike],
    options: DecodeOptions,
    batch_size: int,
    workers: int,
) -> Iterator[list[tuple[int, object]]]:
    """[(index into paths, `Caption` or `Failed`)] per batch, sorted by index."""
    from rnncap.decode.captioner import Failed

    encoder = captioner.model.encoder  # built once here, before the workers fork
    loader = DataLoader(
        ImageFiles(paths, encoder.preprocess),
        batch_size=batch_size,
        num_workers=min(workers, -(-len(paths) // batch_size)),  # no idle workers
        collate_fn=collate_images,
        pin_memory=captioner.device.type == "cuda",
    )
    names = [str(p) for p in paths]
    for images, indices, bad in loader:
        results = [(i, Failed(names[i], message)) for message, i in bad]
        if images is not None:
            captions = captioner.caption_images(images, [names[i] for i in indices], options)
            results += list(zip(indices, captions, strict=True))
        yield sorted(results, key=lambda r: r[0])
