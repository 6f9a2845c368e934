"""`rnncap.decode.pipeline.caption_stream` (the overlapped GPU pipeline, run here on the CPU):
the captions of the stages run one after the other, bad files reported like the PIL path."""

from __future__ import annotations

import pytest
import torch

from rnncap.data.gpu_images import device_batches
from rnncap.data.images import ImageFiles
from rnncap.decode.captioner import Caption, Failed
from rnncap.decode.pipeline import caption_stream
from support.inference import bomb_png, example_copies, example_images


@pytest.fixture
def files(tmp_path):
    """The sample photos twice, with broken files and a PNG (the PIL path) among them."""
    paths = example_copies(tmp_path, truncated_at=3)
    paths.insert(6, bomb_png(tmp_path / "bomb.png"))
    paths.insert(8, tmp_path / "missing.jpg")
    from PIL import Image

    with Image.open(example_images()[0]) as image:
        image.save(tmp_path / "photo.png")
    paths.append(tmp_path / "photo.png")
    return paths


def _serial(captioner, paths, options, batch_size, search_images):
    """The reference: decode, encode and search in the same groups, one stage after another."""
    names = [str(p) for p in paths]
    batches = list(device_batches(paths, captioner.model.encoder, captioner.device, batch_size, 0))
    out, group, count = {}, [], 0
    for k, batch in enumerate(batches):
        group.append(batch)
        count += len(batch[1]) + len(batch[2])
        if count < max(batch_size, search_images) and k < len(batches) - 1:
            continue
        images = [x for x, _, _ in group if x is not None]
        indices = [i for x, batch_indices, _ in group if x is not None for i in batch_indices]
        features = torch.cat([captioner.encode_images(x) for x in images])
        for i, caption in zip(indices, captioner.caption_features(features, options), strict=True):
            out[names[i]] = caption
        group, count = [], 0
    return out


@pytest.mark.parametrize("batch_size, search_images, workers", [(2, 5, 2), (4, 1, 0)])
def test_stream_equals_the_stages_run_in_turn(
    tiny_loaded, files, batch_size, search_images, workers
):
    options = tiny_loaded.decode_options()
    groups = list(caption_stream(tiny_loaded, files, options, batch_size, workers, search_images))
    results = [result for group in groups for _, result in group]
    assert [r.image for r in results] == [str(p) for p in files]  # input order, every file
    assert len(groups) < len(files) / batch_size + 1
    pil_path = ImageFiles(files, tiny_loaded.preprocess)
    expected_bad = {
        str(files[i]): pil_path[i][0] for i in range(len(files)) if isinstance(pil_path[i][0], str)
    }
    reference = _serial(tiny_loaded, files, options, batch_size, search_images)
    for result in results:
        if isinstance(result, Failed):
            assert result.reason == expected_bad[result.image]
        else:
            assert isinstance(result, Caption)
            want = reference[result.image]
            assert (result.text, result.words) == (want.text, want.words)
            assert result.score == pytest.approx(want.score, abs=1e-5)
    assert {r.image for r in results if isinstance(r, Failed)} == set(expected_bad)
    assert len(expected_bad) == 3


@pytest.mark.gpu
def test_caption_files_on_cuda_equal_the_stages_run_in_turn(files):
    from rnncap.decode.captioner import load

    captioner = load("default", device="cuda")
    options = captioner.decode_options()
    results = list(captioner.caption_files(files, progress=False, batch_size=4, workers=2))
    reference = _serial(captioner, files, options, 4, 512)
    assert [r.image for r in results] == [str(p) for p in files]
    captions = [r for r in results if not isinstance(r, Failed)]
    assert len(captions) == len(files) - 3
    # a search over other images at once may round a float differently and, rarely, flip a word
    same = [r for r in captions if r.text == reference[r.image].text]
    print(f"{len(same)} of {len(captions)} captions equal the stages run in turn")
    assert len(same) >= len(captions) - 1
    for result in same:
        assert result.score == pytest.approx(reference[result.image].score, abs=1e-3)
