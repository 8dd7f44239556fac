"""Configs: YAML in, typed dataclasses out; every mistake is an error that names the key."""

from dataclasses import replace
from pathlib import Path

import pytest

from attnmt.config import Config, ConfigError, load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_round_trip_through_yaml(tmp_path):
    config = Config()
    path = tmp_path / "saved.yaml"
    config.save(path)
    assert load_config(path) == config


def test_yaml_values_and_overrides(tmp_path):
    path = write(tmp_path, "model:\n  attention: additive\n  rnn: lstm\ntrain:\n  max_time: 60m\n")
    config = load_config(path, ["train.max_steps=250", "model.input_feeding=false", "data.src_lang=en"])
    assert config.model.attention == "additive" and config.model.rnn == "lstm"
    assert config.train.max_time == 3600.0
    assert config.train.max_steps == 250
    assert config.model.input_feeding is False
    assert config.data.src_lang == "en"
    assert load_config(path, ["model.attention=none"]).model.attention == "none"  # the plain encoder–decoder


def test_unknown_key_is_named_with_the_valid_keys(tmp_path):
    path = write(tmp_path, "model:\n  hiden_size: 256\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "model.hiden_size" in message and "hidden_size" in message and str(path) in message


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'modle'.*valid sections: data, vocab, model"):
        load_config(write(tmp_path, "modle:\n  rnn: gru\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.hidden_size=big", "model.hidden_size expects int, got 'big'"),
        ("model.hidden_size=1.5", "model.hidden_size expects int"),
        ("model.input_feeding=1", "model.input_feeding expects bool"),
        ("model.attention=cosine", "model.attention must be one of dot, general, additive, none"),
        ("train.max_time=soon", "train.max_time expects seconds or a duration"),
        ("model.dropout=1.5", r"model.dropout must be in \[0, 1\)"),
        ("decode.n_best=9", r"decode.n_best \(9\) cannot exceed decode.beam_size \(5\)"),
        ("model.attention=dot", "must equal 2 \\* model.encoder_hidden_size"),
        ("train.batch_tokens=0", "train.batch_tokens must be positive"),
        ("train.accumulate=0", "train.accumulate must be positive"),
        ("train.device=gpu", "train.device must be auto, cpu, cuda, cuda:N .* or mps; got 'gpu'"),
        ("train.device=cuda:x", "train.device must be auto"),
        ("train.precision=fp8", "train.precision must be one of fp32, bf16, fp16"),
        ("hidden_size=3", "must look like section.key=value"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_devices_and_precisions_load():
    for device in ("auto", "cpu", "cuda", "cuda:3", "mps"):
        assert load_config(None, [f"train.device={device}"]).train.device == device
    config = load_config(None, ["train.precision=bf16", "train.accumulate=4"])
    assert (config.train.precision, config.train.accumulate) == ("bf16", 4)


def test_the_readme_example_config_loads_and_shows_the_defaults_but_data_and_max_time(tmp_path):
    """What the README says of its config block."""
    block = README.read_text(encoding="utf-8").split("### The config", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    example = load_config(write(tmp_path, block))
    assert example.train.max_time == 3600.0 and Config().train.max_time == 0.0
    defaults = Config()
    data = replace(example.data, train=defaults.data.train, valid=defaults.data.valid,
                   src_lang=defaults.data.src_lang, trg_lang=defaults.data.trg_lang)
    assert replace(example, data=data, train=replace(example.train, max_time=0.0)) == defaults
