import pytest

from nbhelpers.config import AnalysisConfig, ConfigError, MarginOffsetConfig


def test_defaults_are_valid_and_frozen():
    cfg = MarginOffsetConfig()
    assert cfg.eps_list == (1.0, 2.0, 4.0, 8.0)
    with pytest.raises(Exception):
        cfg.eps = 8  # frozen


def test_int_is_accepted_for_float_but_bool_and_str_are_not():
    assert AnalysisConfig.from_params(eps=4).eps == 4
    with pytest.raises(ConfigError, match="'eps' must be float, got str"):
        AnalysisConfig.from_params(eps="4")
    with pytest.raises(ConfigError, match="'n_samples' must be int, got bool"):
        AnalysisConfig.from_params(n_samples=True)
    with pytest.raises(ConfigError, match="'n_samples' must be int, got float"):
        AnalysisConfig.from_params(n_samples=10.5)


@pytest.mark.parametrize("params, message", [
    ({"profile": "huge"}, "'profile' = 'huge' is not allowed; choose one of"),
    ({"dataset": "imagenet"}, "'dataset' = 'imagenet' is not allowed"),
    ({"eps": -1}, "'eps' is in 1/255 units and must lie in"),
    ({"eps_list": [-2, 4]}, "'eps_list' is in 1/255 units"),
    ({"eps_list": [4, 1]}, "strictly increasing"),
    ({"eps": 3}, "'eps' = 3 must be one of eps_list"),
    ({"n_samples": 0}, "'n_samples' must be > 0"),
    ({"device": "gpu"}, "'device' must be"),
    ({"attack_loss": "l2"}, "'attack_loss' = 'l2' is not allowed"),
    ({"epsilon": 4}, "unknown parameter"),
])
def test_bad_values_name_the_parameter_and_allowed_values(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        MarginOffsetConfig.from_params(**params)


def test_paper_profile_accepts_paper_datasets():
    assert AnalysisConfig.from_params(profile="paper", dataset="cifar10").dataset == "cifar10"
    with pytest.raises(ConfigError, match="'dataset' = 'objects'"):
        AnalysisConfig.from_params(profile="paper", dataset="objects")
