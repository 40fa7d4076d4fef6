"""An Optuna study kept in the run store: what one process writes another resumes; processes
appending at once never take the same number; listings of runs never see it. Against a folder
and against S3 over HTTP (moto). Each test imports optuna itself (half a second), so
collecting this module costs the fast suite's other workers nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kubetune.store import Store, find_runs


@pytest.fixture
def store(file_or_s3_store: Store) -> Store:
    return file_or_s3_store


def space() -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        "train.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "lora.r": CategoricalDistribution([4, 8, 16]),
    }


def loss(params: dict[str, Any]) -> float:
    return float(abs(params["train.learning_rate"] - 3e-4) * 1e3 + params["lora.r"] / 100)


def test_a_study_resumes_from_the_store_as_it_was_left(store: Store) -> None:
    import optuna

    from kubetune.search.journal import study_storage

    first = optuna.create_study(
        study_name="bbc-grid", storage=study_storage(store, "bbc-grid"),
        sampler=optuna.samplers.RandomSampler(seed=1),
    )  # fmt: skip
    for _ in range(2):
        trial = first.ask(space())
        first.tell(trial, loss(trial.params))
    running = first.ask(space())  # a trial the driver started when it was stopped

    again = optuna.load_study(study_name="bbc-grid", storage=study_storage(store, "bbc-grid"))
    assert [(t.number, t.state, t.params, t.value) for t in again.trials] == [
        (t.number, t.state, t.params, t.value) for t in first.trials
    ]
    assert again.trials[-1].state == optuna.trial.TrialState.RUNNING
    assert again.best_value == first.best_value
    again.tell(running.number, loss(running.params))  # the restarted driver finishes it
    assert first.trials[-1].state == optuna.trial.TrialState.COMPLETE, "the first sees it too"


def test_processes_appending_at_once_never_take_the_same_number(store: Store) -> None:
    """Two drivers, each with its own journal reader (as separate processes have), ask and
    tell at once: every trial has its own number and its own value."""
    import optuna

    from kubetune.search.journal import study_storage

    optuna.create_study(study_name="race", storage=study_storage(store, "race"))
    errors: list[BaseException] = []

    def driver(seed: int) -> None:
        try:
            study = optuna.load_study(
                study_name="race", storage=study_storage(store, "race"),
                sampler=optuna.samplers.RandomSampler(seed=seed),
            )  # fmt: skip
            for _ in range(2):
                trial = study.ask(space())
                study.tell(trial, loss(trial.params))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=driver, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    trials = optuna.load_study(study_name="race", storage=study_storage(store, "race")).trials
    assert sorted(t.number for t in trials) == list(range(4))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.value == loss(t.params) for t in trials)


def test_a_stale_reader_appends_after_what_it_had_not_seen(store: Store) -> None:
    from kubetune.search.journal import StoreJournal

    one, two = StoreJournal(store, "s"), StoreJournal(store, "s")
    assert list(two.read_logs(0)) == []
    one.append_logs([{"op": 1}])
    two.append_logs([{"op": 2}, {"op": 3}])  # its number 0 is taken: it reads it, takes 1
    assert store.list_keys("s/search/journal") == [
        "s/search/journal/00000000.json", "s/search/journal/00000001.json",
    ]  # fmt: skip
    assert list(one.read_logs(0)) == [{"op": 1}, {"op": 2}, {"op": 3}]
    assert list(one.read_logs(2)) == [{"op": 3}]


def test_listings_of_runs_never_take_the_journal_for_a_run(store: Store) -> None:
    from kubetune.search.journal import StoreJournal

    StoreJournal(store, "bbc-grid").append_logs([{"op": 0}])
    store.write_text("bbc-grid/bbc-grid-0a1b2c3d/spec.yaml", "name: bbc-grid\n")
    assert [r.run_id for r in find_runs(store.url(""))] == ["bbc-grid-0a1b2c3d"]
