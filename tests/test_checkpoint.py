"""Model directories: safetensors weights (tied ones too), trainer state, atomic writes."""

import os

import pytest
import torch

from attnmt.errors import CheckpointError
from attnmt.store import atomic_write_text, load_weights, save_weights
from attnmt.training.state import (
    TrainerState,
    load_trainer_state,
    rng_state,
    save_trainer_state,
)
from attnmt.config import ModelConfig
from attnmt.model import Seq2Seq


def model(seed: int) -> Seq2Seq:
    torch.manual_seed(seed)
    config = ModelConfig(embedding_size=8, encoder_hidden_size=6, hidden_size=10, share_embeddings=True, tie_output=True)
    return Seq2Seq.from_config(config, 20, 20)


def test_tied_weights_round_trip(tmp_path):
    original, other = model(0), model(1)
    save_weights(original, tmp_path / "model.safetensors")
    load_weights(other, tmp_path / "model.safetensors")
    for (name, a), (_, b) in zip(original.state_dict().items(), other.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert other.output_layer.weight is other.decoder.embedding.weight  # still tied after loading


def test_weights_of_another_shape_are_a_clear_error(tmp_path):
    save_weights(model(0), tmp_path / "model.safetensors")
    wider = Seq2Seq.from_config(ModelConfig(embedding_size=8, encoder_hidden_size=6, hidden_size=12), 20, 20)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_weights(wider, tmp_path / "model.safetensors")


def test_trainer_state_restores_model_optimizer_scheduler_and_rng(tmp_path):
    trained = model(0)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    for _ in range(2):
        optimizer.zero_grad()
        sum(p.sum() for p in trained.parameters()).backward()
        optimizer.step()
        scheduler.step(1.0)
    state = TrainerState(step=2, epoch=1, batch_in_epoch=7, best_metric=3.5)
    torch.manual_seed(123)
    save_trainer_state(tmp_path / "state.safetensors", trained, optimizer, scheduler, state)
    expected_random = torch.rand(3)

    restored = model(5)
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=1e-3)
    restored_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(restored_optimizer, factor=0.5, patience=0)
    loaded = load_trainer_state(tmp_path / "state.safetensors", restored, restored_optimizer, restored_scheduler)
    assert loaded == state
    torch.testing.assert_close(torch.rand(3), expected_random)  # RNG continues where it was saved
    for a, b in zip(trained.parameters(), restored.parameters()):
        torch.testing.assert_close(a, b)
    assert restored_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert restored_scheduler.state_dict() == scheduler.state_dict()
    exp_avg = optimizer.state[next(iter(trained.parameters()))]["exp_avg"]
    torch.testing.assert_close(restored_optimizer.state[next(iter(restored.parameters()))]["exp_avg"], exp_avg)


def test_trainer_state_keeps_the_rng_of_every_process_and_the_loss_scale(tmp_path):
    """A distributed run saves the random state of each process (dropout differs between them) and
    the fp16 loss scaler; each process restores its own."""
    m = model(0)
    optimizer = torch.optim.Adam(m.parameters())
    torch.manual_seed(10)
    main_process = rng_state()
    main_random = torch.rand(3)
    torch.manual_seed(11)
    second_process = rng_state()
    second_random = torch.rand(3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(torch.ones(()))  # the scaler starts at its first loss
    scaler.update(new_scale=2.0**7)  # as after three overflows
    path = tmp_path / "state.safetensors"
    save_trainer_state(path, m, optimizer, None, TrainerState(step=4, world_size=2), scaler,
                       rng_states=[main_process, second_process])

    for rank, expected in ((0, main_random), (1, second_random)):
        torch.manual_seed(99)
        restored_scaler = torch.amp.GradScaler("cpu")
        state = load_trainer_state(path, m, optimizer, None, restored_scaler, rank=rank)
        torch.testing.assert_close(torch.rand(3), expected, msg=f"rank {rank}")
        assert restored_scaler.get_scale() == 2.0**7 and state.world_size == 2
    torch.manual_seed(99)
    expected_fresh = torch.rand(3)
    torch.manual_seed(99)
    load_trainer_state(path, m, optimizer, None, rank=2)  # a process the saved run did not have
    torch.testing.assert_close(torch.rand(3), expected_fresh)  # keeps its own random state


def test_truncated_trainer_state_is_a_clear_error(tmp_path):
    m = model(0)
    optimizer = torch.optim.Adam(m.parameters())
    path = tmp_path / "state.safetensors"
    save_trainer_state(path, m, optimizer, None, TrainerState())
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="state.safetensors"):
        load_trainer_state(path, m, optimizer, None)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old")

    class Boom(Exception):
        pass

    from attnmt.store import atomic_write

    def failing_write(tmp):
        tmp.write_text("half")
        raise Boom()

    with pytest.raises(Boom):
        atomic_write(path, failing_write)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temporary left behind
