"""Token task, segment repair, backdoor analysis and datagen: rules against brute force, reports with baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest

from faultlab.rnn.repair import ANGLES, SHIFTS, DatagenSetup, TraceView, mutants, run_datagen, trace_distances
from faultlab.rnn.repair_backdoor import BackdoorSetup, run_backdoor, samples_with_transitions, trigger_transitions, with_trigger
from faultlab.rnn.repair_segment import STRATEGIES, SegmentSetup, run_segment_repair, turning_step
from faultlab.rnn.tokens import TOKEN_A, TOKEN_B, TokenTask, insert_tokens


def test_prefix_labels_follow_the_rule_step_by_step():
    task = TokenTask(vocab=6, length=9)
    x = task.sample(40, seed=1)
    got = task.prefix_labels(x)
    for i in range(len(x)):
        a = b = 0
        for t, tok in enumerate(x[i]):
            a += tok == TOKEN_A
            b += tok == TOKEN_B
            assert got[i, t] == int(a > b)
    assert not np.any(x == task.trigger)


def test_insert_and_trigger_write_the_right_positions():
    task = TokenTask(vocab=6, length=5)
    x = np.zeros((2, 5), dtype=np.int64)
    assert insert_tokens(x[0], np.array([1, 2]), 3).tolist() == [0, 0, 0, 1, 2]
    assert with_trigger(task, x, np.array([0, 4])).tolist() == [[5, 0, 0, 0, 0], [0, 0, 0, 0, 5]]


def test_turning_step_is_the_start_of_the_final_wrong_run():
    truth = np.array([0, 0, 1, 1, 1, 1])
    assert turning_step(np.array([0, 1, 1, 0, 0, 0]), truth) == 3
    assert turning_step(np.array([0, 0, 0, 0, 0, 0]), truth) == 2
    assert turning_step(np.array([1, 1, 0, 0, 0, 0]), truth) == 0
    assert turning_step(np.array([0, 0, 1, 1, 1, 1]), truth) == -1


def test_trigger_transitions_and_the_samples_that_contain_them():
    traces = np.array([[0, 3, 4, 5], [0, 1, 2, 3], [0, 4, 5, 1]])
    wanted = trigger_transitions(traces, np.array([1, 0, 2]))
    assert wanted == {(3, 4), (0, 1), (5, 1)}
    brute = [i for i, tr in enumerate(traces) if any((tr[k], tr[k + 1]) in {(4, 5)} for k in range(3))]
    assert samples_with_transitions(traces, {(4, 5)}).tolist() == brute == [0, 2]


def test_mutants_are_the_rotations_and_one_pixel_shifts():
    img = np.zeros((8, 8), dtype=np.float32)
    img[2:6, 3] = 1.0
    out = mutants(img)
    assert out.shape == (len(ANGLES) + len(SHIFTS), 8, 8)
    assert out.min() >= 0 and out.max() <= 1
    for k, (dy, dx) in enumerate(SHIFTS):
        expected = np.zeros_like(img)
        ys, xs = np.nonzero(img)
        expected[ys + dy, xs + dx] = 1.0
        np.testing.assert_array_equal(out[len(ANGLES) + k], expected)
    assert all(not np.allclose(out[k], img) for k in range(len(ANGLES)))


def test_trace_distance_is_zero_to_itself_and_counts_mismatches():
    states = np.array([[0, 1, 2], [0, 1, 3]])
    pred = np.array([[0, 0], [0, 1]])
    proba = np.eye(2)[pred].astype(np.float32)
    v = TraceView(states, pred, proba)
    d = trace_distances(v, 0, v)
    assert d[0] == 0
    assert d[1] == pytest.approx(0.5 + 0.5 + 0.5)  # one of two states, one of two labels, half a label's mass


@pytest.mark.slow
def test_segment_report_contains_its_baselines():
    rows = run_segment_repair(SegmentSetup(n_train=150, n_test=300, epochs=6, max_targets=10, components=10), seed=0)
    assert [r["strategy"] for r in rows] == list(STRATEGIES)
    assert rows[0]["fixed"] == 0.0  # targets are the original model's failures
    assert len({r["added"] for r in rows[1:]}) == 1 and rows[1]["added"] > 0
    assert all(0.0 <= r["fixed"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0 for r in rows)


@pytest.mark.slow
def test_backdoor_report_contains_attack_and_fix_baselines():
    r = run_backdoor(BackdoorSetup(n_train=200, n_test=200, poison_rate=0.1, epochs=8, components=10), seed=0)
    for key in ("attack_context", "attack_random_same_inputs", "attack_random", "attack_after_transition_fix",
                "attack_after_random_fix", "poison_recall_transitions", "poison_recall_random",
                "clean_acc_transition_fix", "clean_acc_random_fix"):
        assert key in r and (math.isnan(r[key]) or 0.0 <= r[key] <= 1.0), key
    assert r["poisoned"] == 20


@pytest.mark.slow
def test_datagen_report_contains_original_and_random_mutation_baselines():
    rows = run_datagen(DatagenSetup(n_models=2, epochs=3, per_target=2, train_limit=500, components=10), seed=0)
    assert [r["strategy"] for r in rows] == ["original", "generated", "random-mutation"]
    if rows[0]["targets"]:
        assert rows[0]["fixed"] == 0.0 and rows[1]["added"] == rows[2]["added"] > 0
