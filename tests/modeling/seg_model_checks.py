"""Shared by the model tests: tiny batched inputs and the train-step checks."""
import torch


def make_inputs(sizes, num_classes, channels=3, seed=0, with_targets=True):
    """One uint8 image per (h, w) in ``sizes``, with random targets (top fifth ignored)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for h, w in sizes:
        item = {"image": torch.randint(0, 256, (channels, h, w), generator=gen).to(torch.uint8)}
        if with_targets:
            target = torch.randint(0, num_classes, (h, w), generator=gen)
            target[: h // 5] = 255  # some ignored pixels
            item["sem_seg"] = target
        inputs.append(item)
    return inputs


def train_step_checks(model, inputs, loss_keys=("loss_sem_seg",)):
    """One training forward/backward: the expected losses, finite, a finite gradient for
    every parameter."""
    model.train()
    losses = model(inputs)
    assert set(losses) == set(loss_keys)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
