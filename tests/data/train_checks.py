"""A helper shared by the data tests (a module, not conftest.py: tests import it)."""


def train_two_iterations(model, batch):
    """Two SGD steps of ``model`` on ``batch`` (a list of mapped dicts), every loss finite;
    the model is left in eval mode."""
    import torch
    from detectron2.utils.events import EventStorage

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for it in range(2):
        with EventStorage(it):
            loss = sum(model(batch).values())
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
