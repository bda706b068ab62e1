import enum
from dataclasses import dataclass, field

import pytest

from proxylm.config import ConfigError, dump_yaml, from_dict, load_config, to_dict


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    dim: int = 8
    lr: float = 1e-3
    color: Color = Color.RED
    name: str | None = None

    def __post_init__(self):
        if self.dim <= 0:
            raise ValueError("dim must be positive")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    flags: list[int] = field(default_factory=list)
    verbose: bool = False


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  dim: 16\n  color: blue\nsteps: 20\n")
    cfg = load_config(Outer, path, ["inner.lr=3e-4", "steps=30", "flags=[1,2]", "verbose=true"])
    assert cfg.inner.dim == 16 and cfg.inner.color is Color.BLUE
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.steps == 30
    assert cfg.flags == [1, 2] and cfg.verbose is True


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match="unknown key 'inner.dimm'"):
        load_config(Outer, None, ["inner.dimm=3"])


def test_wrong_types_and_choices_are_clear():
    with pytest.raises(ConfigError, match="'steps' must be an integer"):
        from_dict(Outer, {"steps": "many"})
    with pytest.raises(ConfigError, match="'inner.color' must be one of"):
        from_dict(Outer, {"inner": {"color": "green"}})
    with pytest.raises(ConfigError, match="dim must be positive"):
        from_dict(Outer, {"inner": {"dim": 0}})


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_round_trip_through_plain_data():
    cfg = from_dict(Outer, {"inner": {"color": "blue", "name": "x"}, "steps": 3})
    data = to_dict(cfg)
    assert data["inner"]["color"] == "blue"
    assert from_dict(Outer, data) == cfg
    assert "color: blue" in dump_yaml(cfg)
