"""Where the VSRNet training step's time goes in PyTorch, and what channels-last (NHWC) memory
layout would change: issue 9's profiling step, on the reference model (torch_ref.py).

1. The whole step (batch 3, 3 frames, 512x960, Adam), NCHW vs channels-last, fp32 (TF32) / fp16.
2. torch.profiler: the CUDA kernels of the fp16 step, grouped, top 25, both layouts.
3. VSRNet's conv1 (1->64, 9x9, 9 frames) and conv2 (192->32, 5x5): forward, input gradient,
   weight gradient, per layout and precision.
"""
import json, sys, time, os
import torch, torch.nn.functional as F
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../tests/fixtures/reference"))
import torch_ref

dev = "cuda"
torch.backends.cudnn.benchmark = True


def step_time(fp16, channels_last, iters=30, warmup=8, profile=False):
    m = torch_ref.VSRNet(3).to(dev).train()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=4e-4)
    x = torch.randint(0, 256, (3, 3, 3, 512, 960), device=dev).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
            loss = m(x)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / iters * 1e3
    table = None
    if profile:
        from torch.profiler import profile as prof, ProfilerActivity
        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        table = p.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90)
    return ms, table


def bench(fn, iters=30):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters


def layers():
    rows = []
    for name, n, cin, cout, k in [("conv1", 9, 1, 64, 9), ("conv2", 3, 192, 32, 5), ("conv3", 3, 32, 1, 5)]:
        for dtype in (torch.float32, torch.float16):
            for cl in (False, True):
                fmt = torch.channels_last if cl else torch.contiguous_format
                x = torch.randn(n, cin, 512, 960, device=dev, dtype=dtype).contiguous(memory_format=fmt)
                w = torch.randn(cout, cin, k, k, device=dev, dtype=dtype).contiguous(memory_format=fmt)
                y = F.conv2d(x, w, padding=k // 2)
                g = torch.randn_like(y)
                p = [k // 2] * 2
                fwd = bench(lambda: F.conv2d(x, w, padding=k // 2))
                dgrad = bench(lambda: torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], p, [1, 1], False, [0, 0], 1, [True, False, False]))
                wgrad = bench(lambda: torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], p, [1, 1], False, [0, 0], 1, [False, True, False]))
                rows.append(dict(layer=name, dtype=str(dtype).split(".")[1], layout="NHWC" if cl else "NCHW",
                                 fwd_ms=round(fwd, 3), dgrad_ms=round(dgrad, 3), wgrad_ms=round(wgrad, 3)))
                print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    out = os.environ.get("OUT", ".")
    res = {}
    for fp16 in (False, True):
        for cl in (False, True):
            ms, table = step_time(fp16, cl, profile=fp16)
            key = f"{'fp16' if fp16 else 'fp32'}_{'nhwc' if cl else 'nchw'}"
            res[key] = round(ms, 2)
            print(f"step {key}: {ms:.2f} ms", flush=True)
            if table:
                with open(f"{out}/profile_{key}.txt", "w") as f:
                    f.write(table)
    res["layers"] = layers()
    with open(f"{out}/layout_probe.json", "w") as f:
        json.dump(res, f, indent=1)
