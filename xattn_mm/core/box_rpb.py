"""Box-to-pixel relative position bias (BoxRPB, Plain-DETR).

For every query box and every pixel of a (H, W) feature map, the bias of
head ``h`` is ``rpe_y[h, q, row] + rpe_x[h, q, col]``: two small MLPs map the
distances from the pixel centre to the box's two vertical (resp. horizontal)
edges to one value per head. The two factors are kept separate (memory
O(Q * (H + W)) per head) and summed into a dense (Q, H * W) bias only by
:func:`expand_axial_bias`, where the attention kernel needs it.
"""

import math
from typing import Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

DELTA_MODES = ('linear', 'abs_log8')


class _ChunkedMLP(torch.autograd.Function):
    """``relu(x @ w1.T + b1) @ w2.T`` over row chunks, keeping no hidden
    activations: backward recomputes each chunk's hidden layer.

    The BoxRPB hidden layer holds B * Q * (H + W) * hidden floats (78 MiB at
    B 2, 300 queries, 32 x 32, 512); chunks keep it cache-resident and out
    of the autograd graph, which saves most of the layer's memory and time
    on CPU.

    Both passes run in float32 with autocast off (the caller passes float32
    tensors): the inputs are distances in input pixels, which bf16 resolves
    only to 1/256 of their size, and the whole MLP costs
    O(B * Q * (H + W) * hidden), negligible beside the attention itself.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, chunk: int
    ) -> Tensor:
        out = x.new_empty(x.shape[0], w2.shape[0])
        with torch.autocast(x.device.type, enabled=False):
            for start in range(0, x.shape[0], chunk):
                rows = slice(start, start + chunk)
                hidden = torch.addmm(b1, x[rows], w1.t()).relu_()
                torch.mm(hidden, w2.t(), out=out[rows])
        ctx.save_for_backward(x, w1, b1, w2)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, w1, b1, w2 = ctx.saved_tensors
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w1, grad_b1 = torch.zeros_like(w1), torch.zeros_like(b1)
        grad_w2 = torch.zeros_like(w2)
        grad_out = grad_out.to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            for start in range(0, x.shape[0], ctx.chunk):
                rows = slice(start, start + ctx.chunk)
                hidden = torch.addmm(b1, x[rows], w1.t()).relu_()
                grad_w2.addmm_(grad_out[rows].t(), hidden)
                # ReLU's own backward kernel: no bool mask, no float copy.
                grad_hidden = torch.ops.aten.threshold_backward(
                    grad_out[rows].mm(w2), hidden, 0
                )
                # (2, rows) @ (rows, hidden): a GEMM with 2 output columns
                # (grad_hidden.t() @ x) runs ~5x slower on CPU.
                grad_w1.add_(x[rows].t().mm(grad_hidden).t())
                grad_b1.add_(grad_hidden.sum(0))
                if grad_x is not None:
                    torch.mm(grad_hidden, w1, out=grad_x[rows])
        return grad_x, grad_w1, grad_b1, grad_w2, None


def _run_mlp(mlp: nn.Sequential, x: Tensor) -> Tensor:
    """Apply a BoxRPB MLP (Linear, ReLU, Linear without bias) to (..., 2),
    in float32 (float64 for a float64 MLP) whatever the autocast state
    (see :class:`_ChunkedMLP`)."""
    first, last = mlp[0], mlp[2]
    dtype = torch.promote_types(first.weight.dtype, torch.float32)
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    # About 2**20 hidden values per chunk on CPU (cache sized); GPUs take
    # all rows at once and still save the hidden layer.
    chunk = (
        flat.shape[0] if flat.is_cuda else max(1, 2**20 // first.out_features)
    )
    weights = (first.weight, first.bias, last.weight)
    weights = tuple(w.to(dtype) for w in weights)
    out = _ChunkedMLP.apply(flat, *weights, chunk)
    return out.view(*x.shape[:-1], last.out_features)


def _edge_deltas(
    lo: Tensor, hi: Tensor, size: int, stride: float, mode: str
) -> Tensor:
    """Distances from box edges ``lo``/``hi`` (B, Q), in feature cells, to
    the ``size`` pixel centres, in input pixels: shape (B, Q, size, 2)."""
    centres = (torch.arange(size, device=lo.device, dtype=lo.dtype) + 0.5) * (
        stride
    )
    edges = torch.stack([lo, hi], dim=-1) * stride  # B, Q, 2
    deltas = edges[:, :, None, :] - centres[None, None, :, None]
    if mode == 'abs_log8':
        deltas = torch.sign(deltas) * torch.log2(deltas.abs() + 1.0)
        deltas = deltas / math.log2(8)
    return deltas


def box_edge_deltas(
    boxes: Tensor, spatial_shape: Tuple[int, int], stride: float, mode: str
) -> Tuple[Tensor, Tensor]:
    """BoxRPB inputs: distances from each box's edges to the pixel centres.

    Args:
        boxes (Tensor): (cx, cy, w, h) normalised to the grid, (B, Q, 4).
        spatial_shape (tuple[int, int]): The grid (H, W).
        stride (float): Input pixels per grid cell.
        mode (str): ``'linear'`` or ``'abs_log8'``.

    Returns:
        tuple[Tensor, Tensor]: ``delta_y`` (B, Q, H, 2) and ``delta_x``
        (B, Q, W, 2), box edge minus pixel centre.
    """
    height, width = spatial_shape
    cx, cy, w, h = boxes.unbind(-1)
    delta_x = _edge_deltas(
        (cx - w / 2) * width, (cx + w / 2) * width, width, stride, mode
    )
    delta_y = _edge_deltas(
        (cy - h / 2) * height, (cy + h / 2) * height, height, stride, mode
    )
    return delta_y, delta_x


class BoxRelativePositionBias(BaseModule):
    """Per-head attention bias from query boxes to the pixels of a map.

    Args:
        num_heads (int): Number of attention heads (MLP outputs).
        hidden_dims (int): Hidden width of the two MLPs. Defaults to 512.
        delta_mode (str): ``'linear'`` uses the edge-to-pixel distances in
            input pixels; ``'abs_log8'`` uses ``sign(d) * log2(|d| + 1) / 3``.
            Defaults to ``'linear'``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        num_heads: int,
        hidden_dims: int = 512,
        delta_mode: str = 'linear',
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if delta_mode not in DELTA_MODES:
            raise ValueError(
                f'delta_mode must be one of {DELTA_MODES}, got {delta_mode!r}.'
            )
        for name, value in (
            ('num_heads', num_heads),
            ('hidden_dims', hidden_dims),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f'{name} must be a positive int, got {value!r}.'
                )
        self.num_heads = num_heads
        self.delta_mode = delta_mode
        self.x_mlp = self._mlp(hidden_dims, num_heads)
        self.y_mlp = self._mlp(hidden_dims, num_heads)

    @staticmethod
    def _mlp(hidden_dims: int, num_heads: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(2, hidden_dims),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dims, num_heads, bias=False),
        )

    def forward(
        self, boxes: Tensor, spatial_shape: Tuple[int, int], stride: float
    ) -> Tuple[Tensor, Tensor]:
        """Compute the two axial factors of the bias.

        Args:
            boxes (Tensor): Query boxes (cx, cy, w, h), normalised to the
                (padded) feature map, shape (B, Q, 4).
            spatial_shape (tuple[int, int]): Feature map size (H, W).
            stride (float): Input pixels per feature cell.

        Returns:
            tuple[Tensor, Tensor]: ``rpe_y`` of shape (B, num_heads, Q, H)
            and ``rpe_x`` of shape (B, num_heads, Q, W), float32 under
            autocast too (the distances and MLPs run in float32).
        """
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                'boxes must have shape (batch, num_queries, 4), got '
                f'{tuple(boxes.shape)}.'
            )
        delta_y, delta_x = box_edge_deltas(
            boxes.to(torch.promote_types(boxes.dtype, torch.float32)),
            spatial_shape,
            stride,
            self.delta_mode,
        )
        rpe_x = _run_mlp(self.x_mlp, delta_x).permute(0, 3, 1, 2)
        rpe_y = _run_mlp(self.y_mlp, delta_y).permute(0, 3, 1, 2)
        return rpe_y, rpe_x


def expand_axial_bias(rpe_y: Tensor, rpe_x: Tensor) -> Tensor:
    """Sum the axial factors into the dense bias over row-major pixels.

    Args:
        rpe_y (Tensor): Shape (B, heads, Q, H).
        rpe_x (Tensor): Shape (B, heads, Q, W).

    Returns:
        Tensor: ``bias[b, h, q, row * W + col] = rpe_y[..., row] +
        rpe_x[..., col]``, shape (B, heads, Q, H * W).
    """
    return (rpe_y[..., :, None] + rpe_x[..., None, :]).flatten(-2)
