"""PyTorch's grid_sample warp (border, bilinear, align_corners=True), timed like `vsr bench warp`:
per call, calls queued back to back (see median_ms). Usage: python torch_warp_bench.py 6x1x512x960 14x1x720x1280 [--fp16]"""
import json, sys, time
import torch
import torch.nn.functional as F


def warp(img, flow):
    B, _, H, W = img.shape
    hor = torch.linspace(-1, 1, W, device=img.device, dtype=img.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
    ver = torch.linspace(-1, 1, H, device=img.device, dtype=img.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
    grid = torch.cat([hor + flow[:, 0:1] / ((W - 1) / 2), ver + flow[:, 1:2] / ((H - 1) / 2)], 1)
    return F.grid_sample(img, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=True)


def median_ms(f, warmup=10, runs=50, batches=5):
    """Per call, queued back to back as in a training step: `batches` groups of runs/batches calls,
    each timed from a synchronised device to the end of its last call; the median group."""
    for _ in range(warmup):
        f()
    torch.cuda.synchronize()
    per = max(1, -(-runs // batches))
    ts = []
    for _ in range(batches):
        t = time.perf_counter()
        for _ in range(per):
            f()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3 / per)
    return sorted(ts)[len(ts) // 2]


def main():
    fp16 = "--fp16" in sys.argv
    dt = torch.float16 if fp16 else torch.float32
    for s in [a for a in sys.argv[1:] if not a.startswith("--")]:
        b, c, h, w = map(int, s.split("x"))
        img = torch.rand(b, c, h, w, device="cuda", dtype=dt, requires_grad=True)
        flow = ((torch.rand(b, 2, h, w, device="cuda") - 0.5) * 16).to(dt).requires_grad_(True)
        up = torch.rand(b, c, h, w, device="cuda", dtype=dt)
        fwd = median_ms(lambda: warp(img.detach(), flow.detach()))
        def fb():
            img.grad = None; flow.grad = None
            (warp(img, flow) * up).sum().backward()
        fwdbwd = median_ms(fb)
        print(json.dumps({"impl": "pytorch grid_sample", "shape": [b, c, h, w], "fp16": fp16,
                          "forward_ms": round(fwd, 4), "forward_backward_ms": round(fwdbwd, 4)}))


if __name__ == "__main__":
    main()
