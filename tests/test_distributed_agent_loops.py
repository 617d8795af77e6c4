"""The veRL agent loops on CPU: our rollout code behind veRL's agent-loop API, served by the HF engine.

`HFServer` presents the Hugging Face engine with veRL's server-manager call (`generate(request_id, *,
prompt_ids, sampling_params) -> TokenOutput`), so the loops, the Engine bridge over the event loop,
the outputs veRL stores and the advantages our trainer computes from them all run for real; only
vLLM and the GPUs are missing.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from masked_document import BUDGETS, DOCUMENT, small_config
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from memtrain.distributed import advantages, agent_loops, data, train, verl_config
from memtrain.engines import Sampling
from memtrain.engines.hf import HFEngine
from memtrain.engines.request_batcher import RequestBatcher
from memtrain.models import load_policy, load_saved_tokenizer
from memtrain.rl import kinds
from memtrain.rl.samples import Group, Member, Rollout, Sample


class HFServer:
    """veRL's LLM server client, answered by the in-process HF engine through the HF replica's RequestBatcher,
    with the weight version fields veRL's client adds to every reply (`global_steps`, `min_/max_global_steps`)."""

    def __init__(self, engine: HFEngine, global_steps: int = 1) -> None:
        self.requests, self.global_steps = [], global_steps
        self.batcher = RequestBatcher(engine, tag=lambda: self.global_steps)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.requests.append(dict(sampling_params))
        sampling = Sampling(
            sampling_params["max_tokens"],
            sampling_params["temperature"],
            sampling_params["top_p"],
            tuple(sampling_params["stop_token_ids"]),
        )
        generation, steps = await self.batcher.generate(prompt_ids, sampling)
        return TokenOutput(
            token_ids=list(generation.token_ids),
            log_probs=list(generation.logprobs),
            stop_reason="completed",
            extra_fields={"global_steps": steps, "min_global_steps": steps, "max_global_steps": steps},
        )


@pytest.fixture(scope="module")
def cfg():
    return small_config({"group_size": 2, "recall_group_size": 2}, posttrain={"memagent": {"group_size": 2}})


@pytest.fixture(scope="module")
def verl_cfg(cfg, tiny_policy, tmp_path_factory):
    root = tmp_path_factory.mktemp("verl")
    paths = verl_config.Paths(str(tiny_policy), str(root / "train.parquet"), str(root), str(root / "loops.yaml"))
    return verl_config.build(cfg, "memtrain", cfg["memtrain"], paths, 8, "test")


@pytest.fixture(scope="module")
def server(tiny_policy):
    model = load_policy(tiny_policy, device=torch.device("cpu"), dtype="float32")
    tokenizer = load_saved_tokenizer(tiny_policy)
    return HFServer(HFEngine(model, tokenizer.eos_token_id, torch.Generator().manual_seed(0)))


def make_loop(verl_cfg, server, tiny_policy, settings, tmp_path):
    path = tmp_path / f"{settings['kind']}.json"
    path.write_text(json.dumps(settings))
    return agent_loops.TaskAgentLoop(
        trainer_config=DictConfigWrap(verl_cfg),
        server_manager=server,
        tokenizer=load_saved_tokenizer(tiny_policy),
        processor=None,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(verl_cfg.data),
        settings_path=str(path),
    )


def run_sessions(loop, kind, item, sessions: int, uid: str = "u1") -> dict[str, object]:
    """Run `sessions` agent loops of one item as veRL's worker would; the outputs by veRL's storage key."""
    kwargs = {"extra_info": {"index": 0, "item": kinds.get(kind).encode(item)}, "uid": uid}
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}

    async def all_sessions():
        return await asyncio.gather(*[loop.run(sampling, session_id=s, **kwargs) for s in range(sessions)])

    results = asyncio.run(all_sessions())
    return {f"{uid}_{s}_{i}": output for s, outs in enumerate(results) for i, output in enumerate(outs)}


def test_rollout_becomes_veRL_sequences_with_trajectory_last_and_group_fields():
    turns = tuple(Sample((1, 2), (3, k)) for k in range(3))
    recall = Group(0, "recall", (Member(1.0, (Sample((5,), (6,)),)), Member(0.0, (Sample((5,), (7,)),))))
    rollout = Rollout(groups=[Group(0, "e2e", (Member(1.25, turns),)), recall])
    outs = agent_loops.outputs(rollout, session=3, seconds=0.5, weight_versions=[4, 3, 4])
    assert [o.response_ids for o in outs] == [[6], [7], [3, 0], [3, 1], [3, 2]]
    assert [o.extra_fields[advantages.REWARD] for o in outs] == [1.0, 0.0, 1.25, 1.25, 1.25]
    assert [o.extra_fields[advantages.SCOPE] for o in outs] == ["session"] * 2 + ["prompt"] * 3
    assert all(o.response_mask == [1] * len(o.response_ids) for o in outs)
    # The last sequence carries the session's DAPO signal: unique, since its recall group is informative.
    assert outs[-1].extra_fields["reward_extra_info"] == {verl_config.FILTER_METRIC: 1.0e6 + 3}
    assert outs[-1].reward_score == 1.25
    # veRL's staleness metrics read the oldest and newest weights of every sequence (an int, never missing)
    assert {(o.extra_fields["min_global_steps"], o.extra_fields["max_global_steps"]) for o in outs} == {(3, 4)}
    with pytest.raises(ValueError, match="no weight version"):
        agent_loops.outputs(rollout, session=3, seconds=0.5, weight_versions=[])


def test_dapo_signal_drops_an_item_only_when_no_group_teaches():
    flat = Group(0, "recall", (Member(1.0, ()), Member(1.0, ())))
    mixed = Group(0, "recall", (Member(1.0, ()), Member(0.0, ())))
    assert agent_loops.dapo_signal(0.5, [flat], 0) == agent_loops.dapo_signal(0.5, [flat], 1) == 0.5
    assert agent_loops.dapo_signal(0.5, [flat, mixed], 0) != agent_loops.dapo_signal(0.5, [], 1)


def test_row_advantages_group_trajectories_across_sessions_and_recall_inside_one():
    prompt = {advantages.SCOPE: "prompt", advantages.GROUP: "e2e", advantages.MEMBER: 0}
    keys = ["u_0_0", "u_0_1", "u_0_2", "u_1_0", "u_1_1", "v_0_0", "v_1_0"]
    extras = [
        {advantages.SCOPE: "session", advantages.GROUP: "recall0", advantages.MEMBER: 0, advantages.REWARD: 1.0},
        {advantages.SCOPE: "session", advantages.GROUP: "recall0", advantages.MEMBER: 1, advantages.REWARD: 0.0},
        {**prompt, advantages.REWARD: 1.5},
        {**prompt, advantages.REWARD: 0.5},
        {**prompt, advantages.REWARD: 0.5},
        {**prompt, advantages.REWARD: 0.0},
        {**prompt, advantages.REWARD: 0.0},
    ]
    values = advantages.row_advantages(keys, extras)
    # recall group (1, 0): +-0.5; e2e group of u: sessions 1.5 and 0.5, mean 1.0, every turn of a session alike
    assert values == pytest.approx([0.5, -0.5, 0.5, -0.5, -0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="two rewards"):
        advantages.row_advantages(
            ["u_0_0", "u_0_1"], [{**prompt, advantages.REWARD: 1.0}, {**prompt, advantages.REWARD: 0.0}]
        )


def test_items_survive_the_veRL_dataset_round_trip(tmp_path, tokenizer):
    from omegaconf import OmegaConf

    from memtrain.data.qa import LongContextItem
    from memtrain.data.qa_builders import MultiObjectiveQuestion

    long_context = LongContextItem("q1", "Who?", ("Ada",), "text", 3, ("T",))
    multi = MultiObjectiveQuestion("m1", "A?; B?", (("a",), ("b", "bb")), "toy")
    for kind, item in (("memagent", long_context), ("mem1", multi), ("memtrain", DOCUMENT)):
        assert kinds.get(kind).decode(kinds.get(kind).encode(item)) == item
    assert data.write("memagent", [long_context], tmp_path / "t.parquet") == 1
    dataset = RLHFDataset(
        [str(tmp_path / "t.parquet")], tokenizer, OmegaConf.create({"max_prompt_length": 64, "return_raw_chat": True})
    )
    row = dataset[0]
    assert row["raw_prompt"] == [{"role": "user", "content": "Who?"}] and row["agent_name"] == "memagent_agent"
    assert kinds.MEMAGENT.decode(row["extra_info"]["item"]) == long_context


@pytest.mark.parametrize("variant", ["full", "e2e", "decoupled"])
def test_memtrain_agent_loop_runs_the_task_and_yields_trainable_rows(
    cfg, verl_cfg, server, tiny_policy, tmp_path, variant
):
    settings = train.agent_settings(cfg, "memtrain", cfg["memtrain"], variant, "[MASK]")
    loop = make_loop(verl_cfg, server, tiny_policy, settings, tmp_path)
    rows = run_sessions(loop, "memtrain", DOCUMENT, sessions=2)
    sessions = {key.rsplit("_", 2)[1] for key in rows}
    assert sessions == {"0", "1"}
    for session in sessions:
        own = [o for key, o in rows.items() if key.split("_")[1] == session]
        trajectory = [o for o in own if o.extra_fields[advantages.SCOPE] == "prompt"]
        recall = [o for o in own if o.extra_fields[advantages.SCOPE] == "session"]
        assert len(trajectory) == 4 and own[-4:] == trajectory  # 3 memory updates, then the answer, last
        assert len(recall) == (0 if variant == "e2e" else 2)  # G2 answers to one recall question
        if variant != "full":  # EM alone: recall answers do not enter R^E
            assert trajectory[-1].extra_fields[advantages.REWARD] in (0.0, 1.0)
        assert len({o.extra_fields[advantages.REWARD] for o in trajectory}) == 1  # R^E broadcast to every turn
        assert all(1 <= len(o.response_ids) <= BUDGETS["response"] for o in own)
        assert verl_config.FILTER_METRIC in own[-1].extra_fields["reward_extra_info"]
    assert all(r["max_tokens"] == BUDGETS["response"] and r["stop_token_ids"] for r in server.requests)
    values = advantages.row_advantages(list(rows), [o.extra_fields for o in rows.values()])
    assert len(values) == len(rows) and all(np.isfinite(values))


def test_memagent_agent_loop_answers_from_memory(cfg, verl_cfg, server, tiny_policy, tmp_path):
    from memtrain.data.qa import LongContextItem

    schedule = {**cfg["posttrain"]["memagent"], "seed": 1}
    loop = make_loop(verl_cfg, server, tiny_policy, train.agent_settings(cfg, "memagent", schedule), tmp_path)
    item = LongContextItem("q", "Which tower?", ("Eiffel Tower",), "Paris has a tower. " * 12, 3, ())
    rows = run_sessions(loop, "memagent", item, sessions=2)
    assert len(rows) == 2 * 4 and all(o.extra_fields[advantages.GROUP] == "qa" for o in rows.values())
    assert advantages.row_advantages(list(rows), [o.extra_fields for o in rows.values()]) == [0.0] * 8


def test_importing_the_loops_in_a_worker_keeps_the_registry_entries_and_their_settings(tmp_path):
    """veRL's worker loads our registry file, then its first instantiation imports agent_loops: nothing in that
    import may replace the entries (a decorator did, and every later session failed on a missing settings_path)."""
    import importlib

    from omegaconf import OmegaConf
    from verl.experimental.agent_loop import agent_loop as verl_loops

    settings = tmp_path / "agent_settings.json"
    for entry in OmegaConf.create(agent_loops.loop_registry(settings)):
        verl_loops._agent_loop_registry[entry.name] = entry
    importlib.reload(agent_loops)
    for name in (kind.agent_loop for kind in kinds.KINDS.values()):
        assert verl_loops._agent_loop_registry[name]["settings_path"] == str(settings), name
