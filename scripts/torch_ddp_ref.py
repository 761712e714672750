"""PyTorch DDP anchor for `vsr bench step --gpus N`: the training step of
tests/fixtures/reference/torch_ref.py (VSRNet + frozen FlowNetSD, Adam, synthetic uint8 input,
fp32 or fp16 autocast), data-parallel with DistributedDataParallel over NCCL, one process per GPU,
`--batch` windows per GPU (BatchNorm statistics per GPU, DDP's defaults: gradient buckets
all-reduced during the backward pass, rank 0's BatchNorm buffers broadcast).

The model is imported from torch_ref.py (our own re-statement of the published architecture);
this file only adds the DDP harness. Run on the GPU machine:

    torchrun --standalone --nproc-per-node N scripts/torch_ddp_ref.py --batch 3 [--fp16]

Prints one JSON line (rank 0): ms/iter (median over ranks of the mean), samples/s over all GPUs.
"""
import argparse, json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures', 'reference'))
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch_ref import VSRNet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=3, help='windows per GPU')
    ap.add_argument('--frames', type=int, default=3)
    ap.add_argument('--h', type=int, default=512)
    ap.add_argument('--w', type=int, default=960)
    ap.add_argument('--iters', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=8)
    ap.add_argument('--fp16', action='store_true')
    a = ap.parse_args()

    local = int(os.environ.get('LOCAL_RANK', 0))
    torch.cuda.set_device(local)
    dist.init_process_group('nccl', device_id=torch.device('cuda', local))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    m = VSRNet(a.frames).cuda().train()
    model = DDP(m, device_ids=[local])
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=4e-4)
    g = torch.Generator(device='cuda').manual_seed(rank)
    x = torch.randint(0, 256, (a.batch, 3, a.frames, a.h, a.w), device='cuda', generator=g).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.float16, enabled=a.fp16):
            loss = model(x)
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    dist.barrier()
    t = time.perf_counter()
    for _ in range(a.iters):
        loss = step()
    torch.cuda.synchronize()
    dt = torch.tensor([(time.perf_counter() - t) / a.iters], device='cuda')
    all_dt = [torch.zeros_like(dt) for _ in range(world)]
    dist.all_gather(all_dt, dt)
    if rank == 0:
        ms = sorted(float(v) for v in all_dt)[world // 2] * 1e3
        print(json.dumps(dict(impl='pytorch-ddp', gpus=world, fp16=a.fp16, batch_per_gpu=a.batch, frames=a.frames, h=a.h, w=a.w,
                              ms_per_iter=round(ms, 3), samples_per_s=round(world * a.batch * 1e3 / ms, 2),
                              peak_mem_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1), loss=float(loss))), flush=True)
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
