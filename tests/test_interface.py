"""The tracking calls are declared once (``TrackingCalls``): the client that sends them to the
tracking process and the local module that carries them out both have every one, alike."""

from __future__ import annotations

import inspect

import pytest

from lrexp.tracking import client, local
from lrexp.tracking.interface import CALLS, PIPELINED, TrackingCalls


def _params(f) -> list[tuple[str, object, object]]:
    sig = inspect.signature(f)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_client_sends_each_call_with_the_interfaces_parameters(name):
    assert _params(getattr(client.Tracker, name)) == _params(getattr(TrackingCalls, name))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_local_module_carries_out_each_call_with_the_interfaces_parameters(name):
    declared = _params(getattr(TrackingCalls, name))
    here = _params(getattr(local, name))
    assert here[: len(declared)] == declared  # more keyword options, with defaults, may follow
    assert all(p[2] is not inspect.Parameter.empty for p in here[len(declared) :])


def test_the_local_module_has_no_call_the_interface_lacks():
    assert set(local.__all__) == CALLS


def test_only_calls_that_return_nothing_are_pipelined():
    for name in PIPELINED:
        assert inspect.signature(getattr(TrackingCalls, name)).return_annotation == "None"
    assert {"log_params", "log_batch", "log_files", "log_dataset", "set_tags"} <= PIPELINED
    assert not {"log_model", "find_finished", "create_run", "summarize_sweep"} & PIPELINED
