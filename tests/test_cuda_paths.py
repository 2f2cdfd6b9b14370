"""What only a GPU runs: channels_last models and inputs, cuDNN autotuning, mixed precision on
the device. Skipped here (no GPU on the CI machine); scripts/gpu_check.sh runs the training
path on a GPU end to end."""

import pytest
import torch

from hpccl.data.pipeline import InputPipeline
from hpccl.models import build_model, place_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@cuda
def test_conv_nets_and_image_batches_are_channels_last_on_the_gpu():
    model = place_model(build_model("resnet18", (3, 32, 32), 10), "cuda")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = InputPipeline("cuda")(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert x.is_cuda and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    mlp = place_model(build_model("mlp", (64,), 10), "cuda")
    assert next(mlp.parameters()).is_cuda


@cuda
def test_picking_a_gpu_turns_on_cudnn_autotuning():
    from hpccl.core.runtime import _pick_device
    assert _pick_device("cuda", 0).type == "cuda" and torch.backends.cudnn.benchmark


@cuda
@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_mixed_precision_step_on_the_gpu(kind):
    from hpccl.core.training import Precision

    class Single:          # the distributed-optimizer protocol on one device
        def __init__(self, opt):
            self.opt = opt

        def synchronize(self):
            pass

        def skip_synchronize(self):
            import contextlib
            return contextlib.nullcontext()

        def __getattr__(self, name):
            return getattr(self.opt, name)

    model = place_model(build_model("cnn", (3, 32, 32), 10), "cuda")
    opt = Single(torch.optim.SGD(model.parameters(), lr=0.1))
    p = Precision(kind, "cuda")
    x = InputPipeline("cuda")(torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8))
    y = torch.randint(0, 10, (32,), device="cuda")
    before = [t.detach().clone() for t in model.parameters()]
    for _ in range(4):      # fp16: the scaler may skip a first step whose scaled gradients overflow
        opt.zero_grad()
        with p.autocast():
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
        assert logits.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[kind]
        p.backward(loss)
        p.step(opt, model.parameters(), clip_norm=1.0)
    assert all(torch.isfinite(t).all() for t in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@cuda
@pytest.mark.parametrize("sync", [False, True])
def test_timers_attribute_gpu_time_to_phases_with_or_without_synchronising(sync):
    from hpccl.core.timers import IterationTimers
    timers = IterationTimers(torch.device("cuda"), sync=sync)
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(3):
        timers.start_iteration()
        with timers.phase("forward_backward"):
            for _ in range(10):
                a = a @ a / 64
        with timers.phase("data_load"):
            pass
        timers.end_iteration(0, 0)
    assert len(timers) == 3
    t = timers.totals()
    assert t["forward_backward"] > 5 * t["data_load"] and t["total"] >= t["forward_backward"]


@cuda
def test_host_batches_reach_the_gpu_through_reused_pinned_buffers_on_a_side_stream():
    from hpccl.data.pipeline import HostToDevice
    h2d = HostToDevice("cuda", depth=2)
    batches = [torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8) for n in (7, 5, 9, 9, 3)]
    handles = [h2d.start(b) for b in batches]       # all in flight before any is used
    for batch, handle in zip(batches, handles):
        moved = h2d.finish(handle)
        assert moved.is_cuda and torch.equal(moved.cpu(), batch)
    ring = h2d._rings[(torch.uint8, (3, 8, 8))]
    assert len(ring) == 2 and all(buf.is_pinned() and len(buf) == 9 for buf, _ in ring)
    assert h2d.stream != torch.cuda.current_stream()
    # A copy that starts while the compute stream is busy runs beside it (it is queued on the
    # side stream, from pinned memory): it completes before the long kernel does.
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    busy = torch.cuda.Event()
    for _ in range(20):
        a = a @ a / 64
    busy.record()
    _, copied = h2d.start(torch.zeros(1 << 22, dtype=torch.uint8))
    copied.synchronize()
    assert not busy.query()
    torch.cuda.synchronize()
