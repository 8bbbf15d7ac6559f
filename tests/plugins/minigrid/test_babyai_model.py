"""The BabyAI baseline model: the published architecture, its memory and its options."""

import pytest
import torch
from gymnasium import spaces

from stagerl import ConfigError
from stagerl.plugins.minigrid import (
    BabyAIRecurrentACModel,
    EgocentricMiniGridSensor,
    MiniGridMissionSensor,
)
from stagerl.tasks.sensors import SensorSuite

ACTIONS = spaces.Discrete(7)


def _space(mission: bool = False) -> spaces.Dict:
    sensors = [
        EgocentricMiniGridSensor(view_channels=3),
        MiniGridMissionSensor(instr_len=8, uuid="minigrid_mission"),
    ]
    return SensorSuite(sensors[: 1 + mission]).observation_space


def _observations(steps: int, tasks: int, mission: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    obs = {"minigrid_ego_image": torch.randint(0, 11, (steps, tasks, 7, 7, 3), generator=generator)}
    if mission:
        obs["minigrid_mission"] = torch.tensor([2, 3, 4, 23, 30, 0, 0, 0]).expand(steps, tasks, 8)
    return obs


def test_cnn1_with_lstm_128_has_the_published_parameter_count():
    model = BabyAIRecurrentACModel(ACTIONS, _space(), use_memory=True)
    # convs 208 + 2,080 + 16,512; LSTM 132,096; actor 8,711; critic 8,321 (AllenAct: "168k")
    assert sum(p.numel() for p in model.parameters()) == 167_928
    assert model.memory_shape == (1, 256)


@pytest.mark.parametrize("layer", [0, 3, 5])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_convolutions_as_products_equal_the_convolution(layer, layout):
    # the model's three convolutions on maps of their size in the model (7, 3 and 2: the last
    # one kernel in size) and one larger, with a gradient (updates) and without (acting). The
    # model's maps are channels_last (the view is permuted), a random tensor is not.
    torch.manual_seed(0)
    conv = BabyAIRecurrentACModel(ACTIONS, _space()).image_conv[layer]
    for size in {0: (7, 9), 3: (3, 5), 5: (2, 3)}[layer]:
        maps = torch.randn(4, conv.in_channels, size, size).to(memory_format=layout)
        expected = torch.nn.functional.conv2d(maps, conv.weight, conv.bias)
        with torch.no_grad():
            torch.testing.assert_close(conv(maps), expected)
        maps.requires_grad_()
        output, expected = conv(maps), torch.nn.functional.conv2d(maps, conv.weight, conv.bias)
        torch.testing.assert_close(output, expected)
        gradient, inputs = torch.randn_like(expected), (maps, conv.weight, conv.bias)
        for got, want in zip(
            torch.autograd.grad(output, inputs, gradient),
            torch.autograd.grad(expected, inputs, gradient),
            strict=True,
        ):
            torch.testing.assert_close(got, want)


def test_heads_start_with_unit_norm_rows():
    model = BabyAIRecurrentACModel(ACTIONS, _space(), use_memory=True)
    for layer in (model.actor[0], model.actor[2], model.critic[0], model.critic[2]):
        torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(layer.out_features))
        assert torch.count_nonzero(layer.bias) == 0


def test_memory_is_reset_where_an_episode_starts():
    torch.manual_seed(0)
    model = BabyAIRecurrentACModel(ACTIONS, _space(), use_memory=True)
    obs = _observations(6, 1)
    masks = torch.ones(6, 1)
    masks[3] = 0  # a new episode starts at step 3
    memory = torch.randn(1, 1, 256)
    output, _ = model(obs, memory, torch.zeros(6, 1, dtype=torch.long), masks)
    later = {k: v[3:] for k, v in obs.items()}
    fresh, _ = model(later, model.initial_memory(1), torch.zeros(3, 1, dtype=torch.long), masks[3:])
    torch.testing.assert_close(output.values[3:], fresh.values)
    torch.testing.assert_close(output.distributions.logits[3:], fresh.distributions.logits)


def test_instruction_gru_changes_the_policy_and_shapes_hold():
    torch.manual_seed(0)
    model = BabyAIRecurrentACModel(ACTIONS, _space(mission=True), use_instr=True, use_memory=True)
    obs = _observations(4, 3, mission=True)
    masks = torch.ones(4, 3)
    output, memory = model(obs, model.initial_memory(3), torch.zeros(4, 3, dtype=torch.long), masks)
    assert output.distributions.logits.shape == (4, 3, 7)
    assert output.values.shape == (4, 3)
    assert memory.shape == (1, 3, 256)
    other = {**obs, "minigrid_mission": torch.tensor([2, 3, 4, 25, 31, 0, 0, 0]).expand(4, 3, 8)}
    changed, _ = model(other, model.initial_memory(3), torch.zeros(4, 3, dtype=torch.long), masks)
    assert not torch.allclose(changed.distributions.logits, output.distributions.logits)


def test_feed_forward_without_memory():
    model = BabyAIRecurrentACModel(ACTIONS, _space(), use_memory=False)
    assert model.memory_shape == (0, 0)
    output, _ = model(_observations(2, 5), model.initial_memory(5), None, torch.ones(2, 5))
    assert output.values.shape == (2, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"arch": "cnn2"}, "arch='cnn2'"), ({"lang_model": "attgru"}, "lang_model='attgru'")],
)
def test_unsupported_options_are_named(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        BabyAIRecurrentACModel(ACTIONS, _space(), **kwargs)


def test_instructions_need_a_mission_sensor():
    with pytest.raises(ConfigError, match="minigrid_mission"):
        BabyAIRecurrentACModel(ACTIONS, _space(), use_instr=True)


@pytest.mark.parametrize("grad", [True, False])  # updating, and acting (kept encodings)
def test_each_distinct_mission_is_encoded_as_if_alone(grad):
    torch.manual_seed(0)
    model = BabyAIRecurrentACModel(ACTIONS, _space(mission=True), use_instr=True)
    tokens = torch.tensor([[2, 3, 4, 23, 30, 0, 0, 0], [2, 3, 4, 25, 0, 0, 0, 0]])[[0, 1, 1, 0]]
    with torch.set_grad_enabled(grad):
        encoded = model._instruction(tokens)
    for row, mission in enumerate(tokens):
        words = int((mission != 0).sum())
        outputs, _ = model.instr_rnn(model.word_embedding(mission[None, :words]))
        torch.testing.assert_close(encoded[row], outputs[0, -1])


@pytest.mark.parametrize("fused", [True, False])
def test_encodings_kept_while_acting_expire_with_an_optimizer_step(fused):
    # a fused Adam step leaves the parameters' version counters as they were
    torch.manual_seed(0)
    model = BabyAIRecurrentACModel(ACTIONS, _space(mission=True), use_instr=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    tokens = torch.tensor([[2, 3, 4, 23, 30, 0, 0, 0]])
    with torch.no_grad():
        before = model._instruction(tokens)
    model._instruction(tokens).sum().backward()
    optimizer.step()
    with torch.no_grad():
        after = model._instruction(tokens)
        fresh = model._encode_missions(tokens)
    torch.testing.assert_close(after, fresh)
    assert not torch.allclose(after, before)
