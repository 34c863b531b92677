"""Exact 1-NN against the coreset, kept on the frame's device (edge/knn.py's maths, in torch).

|q - b|^2 = |q|^2 + [q, 1] . [-2b, |b|^2] as in knn.MatmulSearch: one matmul against the
augmented bank, argmin, then |q|^2 added to the winners only. Patch score = the L2 distance
(not squared). Large banks on a CUDA device go to faiss-gpu when it is installed (it takes
torch CUDA tensors through faiss.contrib.torch_utils); otherwise queries are split into
chunks so the distance matrix stays under CHUNK_ELEMENTS.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

# Above this many bank vectors x queries a frame, faiss-gpu (blocked, tuned kernels) is used on CUDA.
FAISS_MIN_WORK = 50_000_000
CHUNK_ELEMENTS = 64_000_000  # 256 MB of float32 distances at most


class TorchNearest:
    """1-NN distances and indices of (Q, D) queries against an (N, D) bank, on `device`."""

    def __init__(self, bank: np.ndarray, device: torch.device, queries_per_call: int):
        b = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
        self.bank = b.to(device)
        aug = torch.cat([-2.0 * b.T, (b * b).sum(1)[None, :]], 0)  # (D + 1, N), built on the CPU as knn.py does
        self.aug_t = aug.contiguous().to(device)
        self.faiss = None
        if device.type == "cuda" and len(bank) * queries_per_call >= FAISS_MIN_WORK:
            self.faiss = _faiss_gpu_index(bank)
        self.name = "faiss-gpu" if self.faiss is not None else f"torch-matmul:{device.type}"
        self.capturable = self.faiss is None  # faiss runs its own streams: not inside a CUDA graph

    def __call__(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances (Q,), indices (Q,))."""
        if self.faiss is not None:
            d2, idx = self.faiss.search(q.contiguous(), 1)
            return d2[:, 0].clamp_min(0).sqrt(), idx[:, 0]
        step = max(1, CHUNK_ELEMENTS // self.aug_t.shape[1])
        dists, idxs = [], []
        for s in range(0, q.shape[0], step):
            part = q[s:s + step]
            d2 = torch.addmm(self.aug_t[-1:], part, self.aug_t[:-1])  # |b|^2 - 2 q.b
            best, idx = d2.min(dim=1)
            dists.append((best + (part * part).sum(1)).clamp_min(0).sqrt())
            idxs.append(idx)
        return (dists[0], idxs[0]) if len(dists) == 1 else (torch.cat(dists), torch.cat(idxs))

    def knn_of(self, v: torch.Tensor, k: int) -> torch.Tensor:
        """Indices of the k bank vectors nearest to one vector v (D,) (for eq. 7's neighbourhood)."""
        d2 = self.aug_t[-1] + v @ self.aug_t[:-1]
        return torch.topk(d2, k, largest=False).indices


def _faiss_gpu_index(bank: np.ndarray):
    """A GPU flat L2 index over the bank, searchable with torch CUDA tensors; None when unavailable."""
    try:
        import faiss
        import faiss.contrib.torch_utils  # noqa: F401  (lets index.search take torch tensors)
    except ImportError:
        return None
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatL2(res, bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    index._res = res  # keep the resources alive with the index
    return index
