"""Real flujo Step objects (flujo from PyPI) run through caudal's executor."""

import logging
import warnings

import pytest

from caudal import ExecutorCore

with warnings.catch_warnings():
    # flujo's import chain emits third-party warnings (pydantic plugins).
    warnings.simplefilter("ignore")
    from flujo.domain.dsl.step import Step as FlujoStep
    from flujo.domain.dsl.step import StepConfig

logging.getLogger("flujo").setLevel(logging.WARNING)


class Inc:
    async def run(self, data, **kwargs):
        return data + 1


class CtxAgent:
    async def run(self, data, *, context=None, **kwargs):
        return {"data": data, "context": context}


class Flaky:
    def __init__(self):
        self.calls = 0

    async def run(self, data, **kwargs):
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError("flaky backend")
        return data


async def test_flujo_step_runs_with_its_name_and_agent():
    r = await ExecutorCore().execute(FlujoStep(name="inc", agent=Inc()), 41)
    assert (r.success, r.output, r.name) == (True, 42, "inc")


async def test_flujo_step_gets_context_keyword():
    r = await ExecutorCore().execute(FlujoStep(name="ctx", agent=CtxAgent()), 1, context={"a": 1})
    assert r.output == {"data": 1, "context": {"a": 1}}


async def test_flujo_step_config_max_retries_is_honoured():
    agent = Flaky()
    step = FlujoStep(name="flaky", agent=agent, config=StepConfig(max_retries=2))
    r = await ExecutorCore().execute(step, "ok")
    assert r.success and r.output == "ok" and agent.calls == 3 and r.attempts == 3


@pytest.mark.parametrize("retries", [0, 1])
async def test_flujo_step_failure_is_a_result(retries):
    agent = Flaky()
    step = FlujoStep(name="f", agent=agent, config=StepConfig(max_retries=retries))
    r = await ExecutorCore().execute(step, 1)
    assert not r.success and isinstance(r.error, ConnectionError)
    assert r.attempts == retries + 1
