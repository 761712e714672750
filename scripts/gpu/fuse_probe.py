"""VSRNet's fuse (conv1 over all frames, BN, LeakyReLU, frames -> channels, conv2, BN, LeakyReLU,
conv3) as vsr computes it on LibTorch, forward + backward, per memory layout and per way of
moving the frames into channels: issue 9's check of what channels-last costs and where."""
import time, torch, torch.nn.functional as F
dev = "cuda"
torch.backends.cudnn.benchmark = True


class FramesToChannels(torch.autograd.Function):
    """(B F, C, H, W) channels-last -> (B, F C, H, W) channels-last: one copy each way."""
    @staticmethod
    def forward(ctx, x, f):
        n, c, h, w = x.shape
        b = n // f
        ctx.f = f
        y = x.permute(0, 2, 3, 1).reshape(b, f, h, w, c).permute(0, 2, 3, 1, 4).contiguous()
        return y.view(b, h, w, f * c).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        b, fc, h, w = g.shape
        f = ctx.f
        c = fc // f
        gx = g.permute(0, 2, 3, 1).reshape(b, h, w, f, c).permute(0, 3, 1, 2, 4).contiguous()
        return gx.view(b * f, h, w, c).permute(0, 3, 1, 2), None


def make(dtype, cl):
    fmt = torch.channels_last if cl else torch.contiguous_format
    p = lambda *s: torch.randn(*s, device=dev, dtype=dtype).mul_(0.05).contiguous(memory_format=fmt).requires_grad_()
    return dict(w1=p(64, 1, 9, 9), w2=p(32, 192, 5, 5), w3=p(1, 32, 5, 5),
                g1=torch.ones(64, device=dev, requires_grad=True), b1=torch.zeros(64, device=dev, requires_grad=True),
                g2=torch.ones(32, device=dev, requires_grad=True), b2=torch.zeros(32, device=dev, requires_grad=True))


def fuse(x, P, mode):
    b, f, h, w = x.shape
    y = F.conv2d(x.reshape(b * f, 1, h, w), P["w1"], padding=4)
    y = F.leaky_relu(F.batch_norm(y, None, None, P["g1"].to(y.dtype), P["b1"].to(y.dtype), True), 0.1)
    if mode == "reshape":
        y = y.reshape(b, f * 64, h, w)
    else:
        y = FramesToChannels.apply(y, f)
    y = F.conv2d(y, P["w2"], padding=2)
    y = F.leaky_relu(F.batch_norm(y, None, None, P["g2"].to(y.dtype), P["b2"].to(y.dtype), True), 0.1)
    return torch.sigmoid(F.conv2d(y, P["w3"], padding=2).float())


def bench(fn, iters=20):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters * 1e3


for dtype in (torch.float32, torch.float16):
    x = torch.rand(3, 3, 512, 960, device=dev, dtype=dtype)
    for cl, mode in [(False, "reshape"), (True, "reshape"), (True, "permute")]:
        P = make(dtype, cl)
        def step():
            out = fuse(x, P, mode)
            out.mean().backward()
        with torch.no_grad():
            fwd = bench(lambda: fuse(x, P, mode))
        fb = bench(step)
        print(f"{str(dtype)[6:]:8} {'NHWC' if cl else 'NCHW'} {mode:8} forward {fwd:6.2f} ms  forward+backward {fb:6.2f} ms", flush=True)
    # the copies alone
    y = torch.randn(9, 64, 512, 960, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
    print(f"   reshape copy NHWC -> NCHW: {bench(lambda: y.reshape(3, 192, 512, 960)):.2f} ms; "
          f"frames->channels permute copy: {bench(lambda: FramesToChannels.forward(type('c', (), {})(), y, 3)):.2f} ms", flush=True)
