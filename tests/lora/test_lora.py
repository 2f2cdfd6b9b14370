import pytest
import torch

from hpccl.core.errors import ConfigError, HpcclError
from hpccl.continual.learners.masking import mask_logits
from hpccl.continual.lora import (IPCTracker, LoRACViT, gram_penalty, orthogonality_penalty, pair_key, param_groups,
                                  task_loss, trainable_parameters)
from hpccl.models import build_model, model_option_names
from hpccl.models.vit import VisionTransformer, load_pretrained, vit_b16

TINY = dict(image_size=8, patch_size=4, in_chans=3, num_classes=6, width=16, depth=2, heads=2, mlp_ratio=2.0)
TIMM_KEYS = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
             "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
             "blocks.0.norm2.weight", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias",
             "norm.weight", "head.weight", "head.bias"]


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(**TINY)


def tiny_lorac(seed=0, **kw):
    return LoRACViT(tiny_vit(seed), rank=2, **kw)


def data(n=24, classes=(0, 1, 2), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
    return x, y


def train_step(model, opt, x, y, classes, ortho_weight=0.0, tracker=None) -> float:
    """What one step of the lorac learner does (learners/loop.fit with its loss and hook)."""
    opt.zero_grad()
    loss = task_loss(model, classes, ortho_weight)(model(x), y)
    loss.backward()
    opt.step()
    if tracker is not None:
        tracker.update()
    return float(loss.detach())


def train_task(model, task, classes, steps=3, ortho=0.1, tracker=None, lr=1e-2):
    model.begin_task(task)
    if tracker is not None:
        tracker.reset()
    opt = torch.optim.Adam(param_groups(model, lr, omega_lr_scale=10.0))
    x, y = data(classes=classes, seed=task + 1)
    losses = [train_step(model, opt, x, y, classes, ortho, tracker) for _ in range(steps)]
    model.end_task()
    return losses


def test_vit_b16_parameter_count_matches_timm():
    with torch.device("meta"):
        model = vit_b16()
    assert sum(p.numel() for p in model.parameters()) == 86_567_656
    names = list(model.state_dict())
    assert all(k in names for k in TIMM_KEYS) and "blocks.11.mlp.fc2.weight" in names


def test_registry_entry():
    assert model_option_names("vit") == {"preset", "patch_size", "width", "depth", "heads", "mlp_ratio",
                                         "pretrained", "image_size"}
    model = build_model("vit", (1, 8, 8), 5, patch_size=4, width=8, depth=1, heads=2)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    with pytest.raises(ConfigError, match="multiples of patch_size"):
        build_model("vit", (3, 30, 30), 5)
    with pytest.raises(ConfigError, match="preset"):
        build_model("vit", (3, 32, 32), 5, preset="huge")


def test_load_pretrained_roundtrip_and_missing_keys(tmp_path):
    src, dst = tiny_vit(0), tiny_vit(1)
    path = tmp_path / "vit.pt"
    torch.save(src.state_dict(), path)
    load_pretrained(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))

    state = src.state_dict()
    del state["blocks.1.attn.qkv.weight"], state["norm.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(HpcclError) as err:
        load_pretrained(dst, path)
    msg = str(err.value)
    assert str(path) in msg and "2 missing key(s)" in msg
    assert "blocks.1.attn.qkv.weight" in msg and "norm.bias" in msg and "extra.weight" in msg
    assert "\n" not in msg

    # Another class count: the head is excluded, the rest loads; via the registry too.
    torch.save(src.state_dict(), path)
    other = VisionTransformer(**{**TINY, "num_classes": 9})
    with pytest.raises(HpcclError, match="head.weight.*another shape|another shape.*head.weight"):
        load_pretrained(other, path)
    load_pretrained(other, path, exclude=("head.",))
    assert torch.equal(other.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    built = build_model("vit", (3, 8, 8), 9, patch_size=4, width=16, depth=2, heads=2, mlp_ratio=2.0,
                        pretrained=str(path))
    assert torch.equal(built.pos_embed, src.pos_embed)
    with pytest.raises(HpcclError, match="does not exist"):
        load_pretrained(other, tmp_path / "nope.pt")


def test_frozen_weights_and_past_adapters_never_change():
    model = tiny_lorac()
    train_task(model, 0, (0, 1, 2))
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if not n.startswith("head.")}
    past = {n: p.detach().clone() for n, p in model.tasks[0].named_parameters()}
    assert any(p.abs().sum() > 0 for n, p in past.items() if "lora_B" in n)  # task 0 did train
    model.begin_task(1)
    opt = torch.optim.SGD(param_groups(model, 0.1, omega_lr_scale=10.0), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = data(classes=(3, 4, 5), seed=7)
    omega0 = {k: v.detach().clone() for k, v in model.tasks[1].omega.items()}
    for _ in range(3):
        train_step(model, opt, x, y, (3, 4, 5), ortho_weight=0.5)
    for n, p in model.backbone.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    for n, p in model.tasks[0].named_parameters():
        assert torch.equal(p, past[n]), n
    assert any(not torch.equal(v, omega0[k]) for k, v in model.tasks[1].omega.items())  # omegas learn
    names = [n for n, _ in trainable_parameters(model)]
    assert names and all(n.startswith(("tasks.1.", "backbone.head.")) for n in names)


def test_ipc_frozen_pairs_get_no_new_adapter_and_fixed_omegas():
    model = tiny_lorac()
    tracker = IPCTracker(model, fraction=0.25)
    train_task(model, 0, (0, 1), steps=4, tracker=tracker)
    frozen = tracker.freeze_top()
    assert len(frozen) == 3 and set(frozen) == set(model.frozen_keys())  # 25% of 12 pairs
    scores = tracker.scores()
    assert min(scores[k] for k in frozen) >= max(v for k, v in scores.items() if k not in frozen)
    train_task(model, 1, (2, 3), steps=2, tracker=tracker)
    tracker.freeze_top()
    t1 = model.tasks[1]
    for key in frozen:
        assert key not in t1.lora_A and key not in t1.lora_B
        assert not t1.omega[key].requires_grad and torch.equal(t1.omega[key], torch.ones(1))
    assert set(t1.lora_A) == set(model.keys) - set(frozen)
    model.begin_task(2)
    for key in model.frozen_keys():
        assert key not in model.tasks[2].lora_A
        assert not model.tasks[2].omega[key].requires_grad
    # Structure round trip (checkpoint restore).
    clone = tiny_lorac(seed=5)
    clone.rebuild(model.structure())
    clone.load_state_dict(model.state_dict())
    x, _ = data(4)
    assert torch.allclose(clone(x), model(x))
    assert [n for n, _ in trainable_parameters(clone)] == [n for n, _ in trainable_parameters(model)]


def test_composed_weight_is_frozen_plus_sum_of_adapters():
    model = tiny_lorac(omega_init=1.0)
    for t in range(3):
        model.begin_task(t)
        with torch.no_grad():
            for p in model.tasks[t].lora_B.values():
                p.normal_()
        model.end_task()
    for layer, m in model.pairs:
        key = pair_key(layer, m)
        expected = model.frozen_weight(layer, m) + sum(
            model.scaling * model.tasks[t].lora_B[key] @ model.tasks[t].lora_A[key] for t in range(3))
        assert torch.allclose(model.composed_weight(layer, m), expected, atol=1e-5)
    # The hooked forward equals a plain ViT with the merged weights.
    merged = tiny_vit(0)
    with torch.no_grad():
        for layer, blk in enumerate(merged.blocks):
            w = blk.attn.qkv.weight
            for i, m in enumerate(("q", "k", "v")):
                w[i * 16:(i + 1) * 16] = model.composed_weight(layer, m)
            blk.attn.proj.weight.copy_(model.composed_weight(layer, "proj"))
            blk.mlp.fc1.weight.copy_(model.composed_weight(layer, "fc1"))
            blk.mlp.fc2.weight.copy_(model.composed_weight(layer, "fc2"))
    x, _ = data(4)
    assert torch.allclose(model(x), merged(x), atol=1e-5)


def test_orthogonality_penalty():
    q, _ = torch.linalg.qr(torch.randn(10, 6))
    assert gram_penalty(q.t()).item() == pytest.approx(0.0, abs=1e-10)
    assert gram_penalty(3.0 * q.t()).item() == pytest.approx(0.0, abs=1e-10)  # directions only
    rows = q.t().clone()
    rows[1] = rows[0] + 0.1 * rows[1]
    assert gram_penalty(rows).item() > 0.5
    model = tiny_lorac()
    model.begin_task(0)
    model.end_task()
    model.begin_task(1)
    penalty = orthogonality_penalty(model)
    assert penalty.item() > 0
    penalty.backward()  # reaches only the current task's A
    assert all(p.grad is None for p in model.tasks[0].parameters())
    assert all(p.grad is not None for p in model.tasks[1].lora_A.values())


def test_masking_and_what_a_task_trains():
    logits = torch.randn(2, 6, requires_grad=True)
    masked = mask_logits(logits, [1, 3])
    assert torch.isinf(masked[:, [0, 2, 4, 5]]).all() and torch.isfinite(masked[:, [1, 3]]).all()
    model = tiny_lorac()
    model.begin_task(0)
    trained = sum(p.numel() for _, p in trainable_parameters(model))
    lora = sum(p.numel() for p in model.tasks[0].parameters())
    head = sum(p.numel() for p in model.backbone.head.parameters())
    assert trained == lora + head < sum(p.numel() for p in model.backbone.parameters())


def test_tiny_vit_trains_loss_decreases():
    model = tiny_lorac()
    tracker = IPCTracker(model, fraction=0.1)
    losses = train_task(model, 0, (0, 1, 2), steps=12, tracker=tracker, lr=3e-2)
    assert losses[-1] < losses[0]
    assert tracker.steps == 12 and any(v > 0 for v in tracker.scores().values())


def test_image_size_resizes_inputs_to_the_checkpoint_resolution(tmp_path):
    # e.g. 32x32 CIFAR through a 224-pixel ViT-B/16 checkpoint; here 8x8 digits at 16x16.
    src = build_model("vit", (1, 16, 16), 4, patch_size=4, width=8, depth=1, heads=2)
    path = tmp_path / "vit16.pt"
    torch.save(src.state_dict(), path)
    model = build_model("vit", (1, 8, 8), 4, patch_size=4, width=8, depth=1, heads=2, image_size=16,
                        pretrained=str(path))
    assert model.pos_embed.shape == src.pos_embed.shape
    x = torch.rand(2, 1, 8, 8)
    up = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(model.features(x), src.features(up))
    with pytest.raises(HpcclError, match="pos_embed"):
        build_model("vit", (1, 8, 8), 4, patch_size=4, width=8, depth=1, heads=2, pretrained=str(path))
