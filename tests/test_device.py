"""train.device and train.precision: which device each process takes, and mixed precision.

CUDA, fp16 and mps cannot run on a CPU-only machine: their device logic is tested here through
``resolve_device``'s explicit view of the machine (how many GPUs, whether mps is there); bf16
autocast runs for real on the CPU."""

import pytest
import torch
from safetensors.torch import load_file

from attnmt.store import TRAINER_STATE_FILE
from attnmt.config import ConfigError, ModelConfig
from attnmt.data.batching import collate
from attnmt.runtime import MixedPrecision, resolve_device
from attnmt.model import Seq2Seq
from attnmt.training.loop import train
from toy import toy_config, write_toy_corpus


def quiet(message: str) -> None:
    pass


@pytest.mark.parametrize(
    "spec, local_rank, cuda_count, mps, expected",
    [
        ("cpu", None, 2, True, "cpu"),
        ("auto", None, 0, True, "cpu"),  # mps only when asked for
        ("auto", None, 2, False, "cuda:0"),
        ("cuda", None, 1, False, "cuda:0"),
        ("cuda:1", None, 2, False, "cuda:1"),
        ("auto", 1, 2, False, "cuda:1"),  # torchrun: the GPU numbered LOCAL_RANK
        ("cuda", 3, 4, False, "cuda:3"),
        ("auto", 1, 0, False, "cpu"),  # torchrun on machines without GPUs: gloo on the CPU
        ("cpu", 1, 2, False, "cpu"),
        ("mps", None, 0, True, "mps"),
    ],
)
def test_the_device_each_process_takes(spec, local_rank, cuda_count, mps, expected):
    assert resolve_device(spec, local_rank, cuda_count, mps) == torch.device(expected)


@pytest.mark.parametrize(
    "spec, local_rank, cuda_count, mps, message",
    [
        ("cuda", None, 0, False, "train.device=cuda but PyTorch sees no CUDA GPU"),
        ("cuda:1", None, 0, False, "sees no CUDA GPU"),
        ("cuda:2", None, 2, False, r"train.device=cuda:2 but PyTorch sees 2 GPU\(s\)"),
        ("cuda:0", 0, 2, False, "under torchrun every process takes the GPU numbered by its LOCAL_RANK"),
        ("auto", 2, 2, False, "LOCAL_RANK 2 but this machine has 2 GPU"),
        ("mps", None, 0, False, "PyTorch sees no Apple GPU"),
        ("mps", 0, 0, True, "mps cannot train on several processes"),
    ],
)
def test_a_device_that_cannot_be_had_is_a_config_error(spec, local_rank, cuda_count, mps, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(spec, local_rank, cuda_count, mps)


def test_fp16_needs_a_cuda_device():
    for device in ("cpu", "mps"):
        with pytest.raises(ConfigError, match="train.precision=fp16 needs a CUDA GPU"):
            MixedPrecision.create("fp16", torch.device(device))


def test_fp16_on_a_cpu_is_a_config_error_before_anything_is_written(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=30)
    config = toy_config(train_prefix, valid_prefix, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU.*runs on cpu; use bf16 or fp32"):
        train(config, tmp_path / "model", log=quiet)
    assert not (tmp_path / "model").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_cuda_without_a_gpu_is_a_config_error(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=30)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        train(toy_config(train_prefix, valid_prefix, device="cuda"), tmp_path / "model", log=quiet)


def test_bf16_autocast_computes_in_bf16_and_keeps_fp32_weights_and_gradients():
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=16, encoder_hidden_size=16, hidden_size=32), 30, 30)
    batch = collate([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]], [0, 1])
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with MixedPrecision.create(precision, torch.device("cpu")).autocast():
            logits, attention = model(batch.src, batch.src_lengths, batch.trg_input)
        assert logits.dtype == dtype
        logits.float().sum().backward()
        assert {p.dtype for p in model.parameters()} == {p.grad.dtype for p in model.parameters()} == {torch.float32}


def test_a_model_trains_in_bf16_on_the_cpu(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=100)
    results = {}
    for precision in ("fp32", "bf16"):
        config = toy_config(train_prefix, valid_prefix, max_steps=30, valid_every=10, device="cpu", precision=precision)
        results[precision] = train(config, tmp_path / precision, progress=False, log=quiet)
    fp32, bf16 = (load_file(tmp_path / name / TRAINER_STATE_FILE) for name in ("fp32", "bf16"))
    weights = [key for key in fp32 if key.startswith(("model.", "optimizer.")) and fp32[key].is_floating_point()]
    assert all(bf16[key].dtype == torch.float32 for key in weights)  # weights and Adam moments stay fp32
    assert any(not torch.equal(fp32[key], bf16[key]) for key in weights)  # autocast did change the arithmetic
    # ... but not what is learnt: the validation loss goes down as in fp32 (2.20, 1.92, 1.67 on the toy task)
    bf16_losses = [v["loss"] for v in results["bf16"].validations]
    assert bf16_losses == sorted(bf16_losses, reverse=True)
    assert bf16_losses == pytest.approx([v["loss"] for v in results["fp32"].validations], rel=0.02)
