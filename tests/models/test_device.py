"""Moving a model moves the tensors upstream keeps outside parameters and buffers (grid caches)."""
import pytest
import torch

from trtqat.models import set_memory_format, to_device


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.register_buffer("anchor_grid", torch.ones(2))
        self.grid = [torch.zeros(1, 1, 2, 2, 2)] * 3  # YOLOv7 Detect: a plain list, rebuilt only on size change
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self._private = torch.zeros(1)  # underscore attributes are left alone
        self.names = ["a", "b"]


def test_to_device_moves_plain_tensor_attributes():
    m = to_device(torch.nn.Sequential(Head()), "meta", torch.channels_last)
    head = m[0]
    assert head.conv.weight.device.type == "meta" and head.anchor_grid.device.type == "meta"
    assert all(g.device.type == "meta" for g in head.grid) and head.stride.device.type == "meta"
    assert head._private.device.type == "cpu" and head.names == ["a", "b"]
    assert head.conv.weight.is_contiguous(memory_format=torch.channels_last)


class Yolov5Like(torch.nn.Module):
    """Like upstream YOLOv5's Model: ``_apply`` maps the function over 5-D grid caches too."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.grid = [torch.zeros(1, 3, 4, 4, 2)]

    def _apply(self, fn, *args, **kwargs):
        self = super()._apply(fn, *args, **kwargs)
        self.grid = [fn(g) for g in self.grid]
        return self


def test_set_memory_format_survives_an_apply_override():
    m = Yolov5Like()
    with pytest.raises(RuntimeError, match="rank 4"):  # why trtqat never calls model.to(memory_format=...)
        m.to(memory_format=torch.channels_last)
    set_memory_format(m, torch.channels_last)
    assert m.conv.weight.is_contiguous(memory_format=torch.channels_last)
    to_device(m, "meta", torch.contiguous_format)
    assert m.conv.weight.device.type == "meta" and m.grid[0].device.type == "meta"
    assert m.conv.weight.is_contiguous()
