"""From a volume to network-sized axial slices and back.

Volumes arrive in the processing orientation (RAS+, so axis 2 is inferior->superior and
``vol[:, :, k]`` is an axial slice). All slices share one in-plane crop: the brain's bounding box
plus a margin, padded to a square in millimetres and resized to ``size`` x ``size`` (the paper's
224) keeping the aspect ratio. Cropping to the brain makes the brain fill the frame the same way
whatever the field of view, so lesions have a similar size in pixels on every scanner. Training
and inference both go through this module, so they see identical geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Margin around the brain bounding box, in millimetres.
MARGIN_MM = 6.0


@dataclass(frozen=True)
class SliceGeometry:
    """How slices were cut from a volume, enough to put predictions back."""

    shape: tuple[int, int, int]
    box: tuple[int, int, int, int]  # x0, x1, y0, y1 (half-open) of the crop in voxels
    resized: tuple[int, int]  # crop size after resizing, before padding
    pad: tuple[int, int]  # offset of the resized crop inside the square
    size: int
    slices: tuple[int, ...]  # indices along axis 2 that were cut


def plan_geometry(
    mask: np.ndarray, zooms: tuple[float, float, float], size: int = 224
) -> SliceGeometry:
    """Compute the crop and resize for every axial slice that contains brain."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the brain mask is empty: no slice to segment")
    nx, ny, _ = mask.shape
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    mx = int(np.ceil(MARGIN_MM / zooms[0]))
    my = int(np.ceil(MARGIN_MM / zooms[1]))
    x0, x1 = max(0, xs[0] - mx), min(nx, xs[-1] + 1 + mx)
    y0, y1 = max(0, ys[0] - my), min(ny, ys[-1] + 1 + my)
    wx, wy = (x1 - x0) * zooms[0], (y1 - y0) * zooms[1]
    scale = size / max(wx, wy)
    rx = max(1, min(size, int(round(wx * scale))))
    ry = max(1, min(size, int(round(wy * scale))))
    return SliceGeometry(
        shape=tuple(int(s) for s in mask.shape),
        box=(int(x0), int(x1), int(y0), int(y1)),
        resized=(rx, ry),
        pad=((size - rx) // 2, (size - ry) // 2),
        size=size,
        slices=tuple(int(z) for z in zs),
    )


def cut_slices(volume: np.ndarray, geom: SliceGeometry) -> torch.Tensor:
    """Return a float32 tensor (n_slices, 1, size, size) of the planned slices."""
    x0, x1, y0, y1 = geom.box
    crop = np.asarray(volume, np.float32)[x0:x1, y0:y1, list(geom.slices)]
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(crop, 2, 0)))[:, None]
    return _resize_pad(t, geom, mode="bilinear")


def context_window(stack: np.ndarray, index: int, context: int) -> np.ndarray:
    """Slices ``index - context`` .. ``index + context`` of an (n, H, W) ``stack`` as (1 + 2 context, H, W),
    zeros beyond its ends (the background value of a brain-masked, normalized slice): the input of a
    2.5D network, the same in training and at inference."""
    n = stack.shape[0]
    out = np.zeros((1 + 2 * context, *stack.shape[1:]), dtype=stack.dtype)
    lo, hi = max(0, index - context), min(n, index + context + 1)
    out[lo - index + context : hi - index + context] = stack[lo:hi]
    return out


def stack_context(slices: torch.Tensor, context: int) -> torch.Tensor:
    """(n, 1, H, W) slices as (n, 1 + 2 context, H, W), each with its neighbours (:func:`context_window`)."""
    if context == 0:
        return slices
    stack = slices[:, 0].numpy()
    return torch.from_numpy(np.stack([context_window(stack, i, context) for i in range(stack.shape[0])]))


def cut_label_slices(label: np.ndarray, geom: SliceGeometry) -> torch.Tensor:
    """Like :func:`cut_slices` for a binary label; bilinear then >= 0.5 keeps thin lesions."""
    return (cut_slices(np.asarray(label, np.float32), geom) >= 0.5).float()


def _resize_pad(t: torch.Tensor, geom: SliceGeometry, mode: str) -> torch.Tensor:
    rx, ry = geom.resized
    resized = F.interpolate(t, size=(rx, ry), mode=mode, align_corners=False)
    out = torch.zeros((t.shape[0], 1, geom.size, geom.size), dtype=t.dtype)
    px, py = geom.pad
    out[:, :, px : px + rx, py : py + ry] = resized
    return out


def paste_slices(slices: torch.Tensor | np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Put (n, 1, size, size) slice maps back on the volume grid (0 elsewhere), float32."""
    t = torch.as_tensor(slices, dtype=torch.float32)
    px, py = geom.pad
    rx, ry = geom.resized
    x0, x1, y0, y1 = geom.box
    inner = t[:, :, px : px + rx, py : py + ry]
    back = F.interpolate(inner, size=(x1 - x0, y1 - y0), mode="bilinear", align_corners=False)
    out = np.zeros(geom.shape, dtype=np.float32)
    out[x0:x1, y0:y1, list(geom.slices)] = np.moveaxis(back[:, 0].numpy(), 0, 2)
    return out
