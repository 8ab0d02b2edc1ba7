"""The benchmark's reference 3D U-Net in PyTorch (same as bench/reference_unet.ts).

2 pooling levels, two 3x3x3 conv + ReLU per block, base width 8, nearest x2 upsampling,
concatenated skips, 1x1x1 head, BCE-with-logits, Adam 1e-3, batch 1. Prints one JSON line:
{"torch": version, "threads": n, "shape": [...], "step_s": median seconds per training step,
 "infer_s": median seconds per inference}.
Usage: python3 bench/reference_unet.py D H W [steps]  (threads: BENCH_THREADS, default all cores)
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv3d(cout, cout, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, base=8):
        super().__init__()
        self.enc1, self.enc2, self.mid = block(1, base), block(base, 2 * base), block(2 * base, 4 * base)
        self.dec2, self.dec1 = block(6 * base, 2 * base), block(3 * base, base)
        self.head = nn.Conv3d(base, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool3d(e1, 2))
        m = self.mid(F.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
        return self.head(d1)


def main():
    d, h, w = (int(v) for v in sys.argv[1:4])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    torch.manual_seed(0)
    net = UNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(1, 1, d, h, w)
    y = (x > 0.5).float()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    infer = []
    with torch.no_grad():
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            net(x)
            infer.append(time.perf_counter() - t0)
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in net.parameters()),
        "shape": [d, h, w],
        "step_s": statistics.median(times[1:]),
        "infer_s": statistics.median(infer[1:]),
    }))


if __name__ == "__main__":
    main()
