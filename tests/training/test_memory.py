"""The per-class FIFO memory: order, bound, per-step cap, and vectorised writes across classes."""

import pytest
import torch

from dnc.training.memory import ClassMemory


def test_fifo_order_and_bound():
    mem = ClassMemory(num_classes=3, size=5, dim=2, per_step_cap=3)
    pushed = {0: [], 1: [], 2: []}
    next_id = 0
    g = torch.Generator().manual_seed(0)
    for _ in range(7):
        labels = torch.randint(0, 3, (6,), generator=g)
        ids = torch.arange(next_id, next_id + 6)
        next_id += 6
        feats = torch.stack([ids.float(), -ids.float()], 1)
        mem.push(feats, labels, ids)
        for c in range(3):
            # The cap keeps the 3 ids with the smallest key (a fixed hash), in batch order.
            mine = ids[labels == c].tolist()
            chosen = set(sorted(mine, key=lambda i: (i * 2654435761) % 2**32)[:3])
            pushed[c] += [i for i in mine if i in chosen]
    feats, ids, mask = mem.gather(torch.arange(3))
    for c in range(3):
        want = pushed[c][-5:]  # newest `size`, oldest first
        got = ids[c][mask[c]].tolist()
        assert got == want, (c, got, want)
        assert feats[c][mask[c]][:, 0].tolist() == [float(i) for i in want]
        assert int(mem.count[c]) == min(5, len(pushed[c]))


def test_push_returns_touched_classes_and_leaves_others():
    mem = ClassMemory(4, 3, 2, 2)
    touched = mem.push(torch.ones(3, 2), torch.tensor([2, 0, 2]), torch.tensor([10, 11, 12]))
    assert touched.tolist() == [0, 2]
    assert mem.count.tolist() == [1, 0, 2, 0]
    _, ids, mask = mem.gather(torch.tensor([1, 3]))
    assert not mask.any()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="memory size"):
        ClassMemory(2, 0, 4, 1)
    with pytest.raises(ValueError, match="per-step cap"):
        ClassMemory(2, 4, 4, 5)


def test_memory_is_checkpointed_as_buffers():
    mem = ClassMemory(2, 4, 3, 2)
    mem.push(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([5, 6]))
    state = mem.state_dict()
    other = ClassMemory(2, 4, 3, 2)
    other.load_state_dict(state)
    assert torch.equal(other.ids, mem.ids) and torch.equal(other.feats, mem.feats)
