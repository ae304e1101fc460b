"""MixUp / CutMix of a training batch (engine.mix_batch): images and soft targets agree, and the mixing is seeded."""

from __future__ import annotations

import pytest
import torch

from mobilenets.engine import mix_batch

N, CLASSES = 8, 10


def _constant_batch():
    """Image i is filled with the value i and labelled i: a mixed image tells which images went into it."""
    images = torch.arange(N, dtype=torch.float32).view(N, 1, 1, 1).expand(N, 3, 16, 20).contiguous()
    return images, torch.arange(N)


def _partner(targets: torch.Tensor, i: int) -> tuple[int, float]:
    """(the other image mixed into image i, its weight); (i, 0.0) when i was paired with itself."""
    row = targets[i].clone()
    row[i] = 0
    j = int(row.argmax())
    return (j, float(row[j])) if row[j] > 0 else (i, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_mixup_blends_images_as_the_targets_say(seed):
    images, labels = _constant_batch()
    mixed, targets = mix_batch(images, labels, CLASSES, mixup_alpha=0.4, cutmix_alpha=0.0, seed=seed)
    assert targets.shape == (N, CLASSES) and torch.allclose(targets.sum(1), torch.ones(N))
    partners = set()
    for i in range(N):
        j, weight = _partner(targets, i)
        partners.add(j)
        assert torch.allclose(mixed[i], torch.full_like(mixed[i], (1 - weight) * i + weight * j), atol=1e-5)
    assert partners == set(range(N))  # a permutation of the batch
    assert torch.equal(images, _constant_batch()[0])  # the input batch is not modified


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_cutmix_pastes_a_box_whose_area_is_the_target_weight(seed):
    images, labels = _constant_batch()
    mixed, targets = mix_batch(images, labels, CLASSES, mixup_alpha=0.0, cutmix_alpha=1.0, seed=seed)
    assert torch.allclose(targets.sum(1), torch.ones(N))
    for i in range(N):
        j, weight = _partner(targets, i)
        values = set(mixed[i].unique().tolist())
        assert values <= {float(i), float(j)}
        if j != i:
            pasted = (mixed[i] == j).float().mean()
            assert float(pasted) == pytest.approx(weight)  # lambda recomputed from the pasted area
            rows, cols = torch.nonzero(mixed[i, 0] == j, as_tuple=True)
            if len(rows):  # the pasted pixels form one rectangle
                assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert torch.equal(images, _constant_batch()[0])


def test_mixing_is_seeded_and_both_kinds_are_used():
    images, labels = _constant_batch()
    a = mix_batch(images, labels, CLASSES, mixup_alpha=0.2, cutmix_alpha=1.0, seed=(0, 5, 0))
    b = mix_batch(images, labels, CLASSES, mixup_alpha=0.2, cutmix_alpha=1.0, seed=(0, 5, 0))
    c = mix_batch(images, labels, CLASSES, mixup_alpha=0.2, cutmix_alpha=1.0, seed=(0, 6, 0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    kinds = set()
    for step in range(40):
        mixed, _ = mix_batch(images, labels, CLASSES, mixup_alpha=0.2, cutmix_alpha=1.0, seed=(0, step, 0))
        kinds.add("cutmix" if torch.equal(mixed, mixed.round()) else "mixup")  # cutmix copies values, mixup blends
    assert kinds == {"cutmix", "mixup"}
